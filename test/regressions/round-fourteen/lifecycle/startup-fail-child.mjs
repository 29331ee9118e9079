// Child: registers the plugin on a database it cannot use, reports how ready() failed, then
// (closeMode 'close') closes the app, or ('none') leaves it; the process must then exit by itself.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'

const [url, plugin, closeMode, secret, goodUrl, applicationName] = process.argv.slice(2)
const app = Fastify()
const pool = { connectTimeout: 1_000, acquireTimeout: 500 }
if (plugin === 'replica') {
  // The primary opens; its replica cannot be reached.
  app.register(pgPool, { connection: goodUrl, replicas: [url], pool: { ...pool, applicationName } })
} else if (plugin === 'umbrella') {
  app.register(pgPool, { connection: url, pool })
} else {
  app.register(pgPoolCore, { connection: url, pool })
}
app.get('/x', async () => ({ ok: true }))
let report
try {
  await app.ready()
  report = { ready: true }
} catch (error) {
  const text = `${error?.message}\n${error?.stack}\n${JSON.stringify(error)}`
  report = { ready: false, code: error?.code, leaks: secret !== '' && text.includes(secret) }
}
if (closeMode === 'close') {
  const started = performance.now()
  try {
    await app.close()
    report.close = 'resolved'
  } catch (error) {
    report.close = `rejected ${error?.code ?? error?.message}`
  }
  report.closeMs = Math.round(performance.now() - started)
}
const settledAt = performance.now()
console.log(JSON.stringify(report))
process.on('exit', () => {
  console.log(JSON.stringify({ exitMs: Math.round(performance.now() - settledAt) }))
})

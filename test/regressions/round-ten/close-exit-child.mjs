// Child: an app with a hung statement in flight (over HTTP, or inject), app.close(); prints the close
// time and the answer, then how long the process took to exit after close() resolved.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'

const [url, mode] = process.argv.slice(2)
const app = Fastify()
const pool = { max: 1, closeTimeout: 300, statementTimeout: 0 }
await app.register(pgPool, { connection: url, pool, health: { drainDelay: 200 }, metrics: false })
if (mode === 'named') await app.register(pgPoolCore, { name: 'other', connection: url, pool })
app.get('/hang', async (request) => request.db`select pg_sleep(20)`)
let answer
if (mode === 'listen') {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address()
  answer = fetch(`http://127.0.0.1:${port}/hang`, { headers: { connection: 'close' } }).then((r) => r.status)
} else {
  await app.ready()
  answer = app.inject('/hang').then((r) => r.statusCode)
}
if (mode === 'named') void app.dbs.other`select pg_sleep(20)`.catch(() => {})
await new Promise((resolve) => setTimeout(resolve, 500))
const started = performance.now()
await app.close()
const closeMs = Math.round(performance.now() - started)
const status = await answer
const closedAt = performance.now()
process.on('exit', () => {
  console.log(JSON.stringify({ closeMs, status, exitMs: Math.round(performance.now() - closedAt) }))
})

// Child process for double-send.test.ts. A transaction route whose handler calls reply.send()
// and then also returns a value: a common Fastify mistake, which Fastify answers with a
// "Reply was already sent" warning. argv: <url> <table> <mode>
//   mode 'crash':    no process handlers; prints the response, then 'alive' if the process survived.
//   mode 'deferred': the transaction's COMMIT fails (deferred foreign key); handlers record any
//                    uncaught error; prints one JSON line with status, body, rows and uncaught.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'

const [url, table, mode] = process.argv.slice(2)
const uncaught = []
if (mode === 'deferred') {
  process.on('uncaughtException', (error) => uncaught.push(error.code ?? error.message))
  process.on('unhandledRejection', (error) => uncaught.push(error.code ?? error.message))
}
const app = Fastify({ logger: false })
await app.register(pgPoolCore, { connection: url, pool: { max: 1, applicationName: `probe-${table}` } })
app.post('/twice', { config: { db: { transaction: true } } }, async (request, reply) => {
  await request.db.unsafe(`insert into ${table}_note values ('twice')`)
  if (mode === 'deferred') await request.db.unsafe(`insert into ${table}_child values (1, 999)`)
  reply.send({ first: true })
  return { second: true }
})
const response = await app.inject({ method: 'POST', url: '/twice' })
await new Promise((resolve) => setTimeout(resolve, 300))
if (mode === 'crash') {
  console.log(`response ${response.statusCode} ${response.body}`)
  console.log('alive')
} else {
  const [{ n }] = await app.db.unsafe(`select count(*)::int as n from ${table}_note`)
  console.log(JSON.stringify({ status: response.statusCode, body: response.body, rows: n, uncaught }))
}
await app.close()

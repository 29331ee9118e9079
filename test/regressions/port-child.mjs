// Child process for bad-port-host-env.test.ts: registers the core (lazy) with the connection given
// as JSON in argv[2] (null: none, the PG* environment), sends one request if register accepted it,
// closes, prints 'closed' and exits.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'

const connection = JSON.parse(process.argv[2]) ?? undefined
const app = Fastify()
let registered = 'registered'
try {
  await app.register(pgPoolCore, { connection, pool: { lazy: true, connectTimeout: 1_000, acquireTimeout: 1_500 } })
  app.get('/q', async (request) => request.db`select 1 as one`)
  await app.ready()
} catch (error) {
  registered = `refused ${error.code}`
}
process.stdout.write(`${registered}\n`)
if (registered === 'registered') {
  const response = await app.inject('/q')
  process.stdout.write(`status ${response.statusCode} ${response.json().code}\n`)
}
await app.close()
process.stdout.write('closed\n')

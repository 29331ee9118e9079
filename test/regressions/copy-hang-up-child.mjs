// Child process of copy-hang-up.test.ts: a COPY TO STDOUT returned as a GET's payload, clients
// that hang up while it runs. Prints one JSON line `{ "done": true, ... }` when every hang-up
// was survived; an uncaught 'error' event ends the process before that (exit code 1, its stack
// on stderr). PG_URL: the database; HANG_UPS: the delays (ms) after which each client hangs up;
// MODE=handlerTimeout: no client hangs up, the route's handlerTimeout (100 ms) fires instead
// (three requests through app.inject).
import { request as httpRequest } from 'node:http'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'

const app = Fastify({ logger: false })
await app.register(pgPoolCore, {
  connection: process.env.PG_URL,
  pool: { max: 2, applicationName: process.env.APP_NAME ?? 'copy-hang-up', pgbouncer: false },
})
const statement = process.env.STATEMENT ?? 'copy (select g, pg_sleep(0.001) from generate_series(1, 2000) g) to stdout'
const mode = process.env.MODE ?? 'hang-up'
app.get('/export', mode === 'handlerTimeout' ? { handlerTimeout: 100 } : {}, async (request, reply) => {
  reply.type('text/plain')
  return request.db.unsafe(statement).readable()
})
if (mode === 'handlerTimeout') {
  const statuses = []
  for (let i = 0; i < 3; i++) {
    statuses.push((await app.inject('/export')).statusCode)
    const deadline = Date.now() + 5_000
    while (app.pgPool.stats().leased > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  }
  await new Promise((r) => setTimeout(r, 500))
  const stats = app.pgPool.stats()
  await app.close()
  console.log(JSON.stringify({ done: true, statuses, leased: stats.leased }))
  process.exit(0)
}
await app.listen({ port: 0, host: '127.0.0.1' })
const { port } = app.server.address()

const delays = (process.env.HANG_UPS ?? '5,30,100,300,1000').split(',').map(Number)
const outcomes = []
for (const after of delays) {
  outcomes.push(
    await new Promise((resolve) => {
      let bytes = 0
      const req = httpRequest(`http://127.0.0.1:${port}/export`, { agent: false })
      req.on('response', (res) => res.on('data', (chunk) => (bytes += chunk.length)))
      req.on('error', () => {})
      req.on('close', () => resolve({ after, bytes }))
      req.end()
      setTimeout(() => req.destroy(), after)
    }),
  )
  // The lease comes back (the COPY cancelled or read on) before the next client.
  const deadline = Date.now() + 5_000
  while (app.pgPool.stats().leased > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
}
// Anything the last abort still has to settle.
await new Promise((r) => setTimeout(r, 500))
const stats = app.pgPool.stats()
await app.close()
console.log(JSON.stringify({ done: true, outcomes, leased: stats.leased }))

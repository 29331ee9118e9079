import { buildApp } from './app.js'
import { startDatabase } from './database.js'

const database = await startDatabase({ info: (obj, msg) => console.log(msg, obj) })
const app = await buildApp({ connection: database.url, pool: { pgbouncer: process.env.PGBOUNCER === 'true' } })
const port = Number(process.env.PORT ?? 3000)
const address = await app.listen({ port, host: process.env.HOST ?? '127.0.0.1' })

console.log(`
fastify-pg-pool demo on ${address}; try:
  curl ${address}/items
  curl ${address}/items/1
  curl -X POST ${address}/items/1/move/2      # transaction: both rows or neither
  curl -X POST ${address}/items/3/move/1      # fails the stock check: rolled back, 500
  curl ${address}/slow?ms=500
  curl ${address}/health
  curl ${address}/health/live
  curl ${address}/metrics
Ctrl-C stops the app and the database.
`)

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    await app.close()
    await database.stop()
    process.exit(0)
  })
}

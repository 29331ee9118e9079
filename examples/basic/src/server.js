import { createServer } from 'node:net'
import { buildApp } from './app.js'
import { DemoDatabase } from './database.js'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
const database = new DemoDatabase({ info: (obj, msg) => console.log(msg, obj) })
let app
let stopping

/** Closes the app, stops the database and removes its directory, then exits. */
function stop(code) {
  stopping ??= (async () => {
    await app?.close().catch(() => {})
    await database.stop().catch((error) => console.error('stopping the database failed:', error.message))
    process.exit(code)
  })()
  return stopping
}

// Installed before anything starts: Ctrl-C during the start cleans up too.
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => stop(0))

function portIsFree(candidate) {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(candidate, host, () => server.close(() => resolve(true)))
  })
}

/** One line for the errors a user can fix; the error itself otherwise. */
async function explain(error) {
  if (error.code === 'EADDRINUSE') {
    let free = port + 1
    while (free < port + 20 && !(await portIsFree(free))) free++
    return `Port ${port} on ${host} is taken by another program: PORT=${free} npm run demo picks another.`
  }
  if (error.code === 'EACCES') return `Port ${port} on ${host} needs privileges: PORT=3000 npm run demo picks another.`
  return error
}

try {
  const url = await database.start()
  // Comma-separated replica URLs (examples/docker-compose.yml, examples/kubernetes set it).
  const replicas = (process.env.DATABASE_REPLICA_URLS ?? '').split(',').filter((entry) => entry.trim() !== '')
  app = await buildApp({ connection: url, replicas, pool: { pgbouncer: process.env.PGBOUNCER === 'true' } })
  const address = await app.listen({ port, host })
  console.log(`
fastify-pg-pool demo on ${address}; try:
  curl ${address}/items
  curl ${address}/items/1
  curl -X POST ${address}/items/1/move/2      # transaction: both rows or neither
  curl -X POST ${address}/items/3/move/1      # fails the stock check: rolled back, 409
  curl ${address}/slow?ms=500
  curl ${address}/health
  curl ${address}/health/live
  curl ${address}/health/ready
  curl ${address}/metrics
Ctrl-C stops the app and the database.
`)
} catch (error) {
  if (!stopping) {
    console.error(await explain(error))
    await stop(1)
  }
}

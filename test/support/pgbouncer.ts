import { type ChildProcess, spawn } from 'node:child_process'
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { freePort } from './embedded-server.js'

export interface PgBouncer {
  readonly port: number
  /** Rewrites a URL of the upstream server to go through PgBouncer (same user, db, password). */
  via(url: string): string
  /** Runs a command on the admin console (database `pgbouncer`, the upstream's user). */
  admin(command: string): Promise<Record<string, unknown>[]>
  /** PgBouncer's log so far. */
  log(): Promise<string>
  stop(): Promise<void>
}

export interface PgBouncerOptions {
  /** URL of the upstream server (its user and password are used for server logins). */
  upstream: string
  poolMode?: 'transaction' | 'session'
  defaultPoolSize?: number
  maxClientConn?: number
  /** More `[pgbouncer]` settings, over the ones above (`server_reset_query_always: 1`). */
  settings?: Record<string, string | number>
}

/** Whether a pgbouncer binary is on PATH (Debian package `pgbouncer`). */
export async function hasPgBouncer(): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn('pgbouncer', ['--version'], { stdio: 'ignore' })
    child.on('error', () => resolve(false))
    child.on('exit', (code) => resolve(code === 0))
  })
}

function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = connect(port, '127.0.0.1')
      socket.once('connect', () => {
        socket.destroy()
        resolve()
      })
      socket.once('error', () => {
        socket.destroy()
        if (Date.now() > deadline) reject(new Error(`pgbouncer did not listen on ${port}`))
        else setTimeout(attempt, 50)
      })
    }
    attempt()
  })
}

/** A real PgBouncer on 127.0.0.1 in front of `upstream`, transaction mode by default. */
export async function startPgBouncer(options: PgBouncerOptions): Promise<PgBouncer> {
  const upstream = new URL(options.upstream)
  const port = await freePort()
  const dir = await mkdtemp(join(tmpdir(), 'fpp-bouncer-'))
  // PgBouncer refuses to run as root; it drops to the `postgres` user, who must reach these files.
  await chmod(dir, 0o777)
  const user = decodeURIComponent(upstream.username || 'postgres')
  const password = decodeURIComponent(upstream.password)
  const server = [
    `host=${upstream.hostname}`,
    `port=${upstream.port || 5432}`,
    `user=${user}`,
    ...(password ? [`password=${password}`] : []),
  ].join(' ')
  await writeFile(join(dir, 'users.txt'), `"${user}" ""\n`)
  const ini: Record<string, string | number> = {
    listen_addr: '127.0.0.1',
    listen_port: port,
    unix_socket_dir: '',
    auth_type: 'trust',
    auth_file: join(dir, 'users.txt'),
    admin_users: user,
    pool_mode: options.poolMode ?? 'transaction',
    default_pool_size: options.defaultPoolSize ?? 20,
    max_client_conn: options.maxClientConn ?? 1000,
    ignore_startup_parameters: 'extra_float_digits',
    logfile: join(dir, 'pgbouncer.log'),
    pidfile: join(dir, 'pgbouncer.pid'),
    ...options.settings,
  }
  await writeFile(
    join(dir, 'pgbouncer.ini'),
    ['[databases]', `* = ${server}`, '[pgbouncer]', ...Object.entries(ini).map(([k, v]) => `${k} = ${v}`), ''].join(
      '\n',
    ),
  )
  const child: ChildProcess = spawn('pgbouncer', ['-u', 'postgres', join(dir, 'pgbouncer.ini')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  child.stderr?.on('data', (chunk) => {
    stderr += String(chunk)
  })
  const log = () => readFile(join(dir, 'pgbouncer.log'), 'utf8').catch(() => '')
  try {
    await waitForPort(port, 10_000)
  } catch (error) {
    child.kill('SIGKILL')
    throw new Error(`${String(error)}\n${stderr}\n${await log()}`)
  }
  const via = (url: string) => {
    const parsed = new URL(url)
    parsed.hostname = '127.0.0.1'
    parsed.port = String(port)
    return parsed.toString()
  }
  return {
    port,
    via,
    log,
    async admin(command) {
      const url = new URL(via(options.upstream))
      url.pathname = '/pgbouncer'
      const sql = postgres(url.toString(), { max: 1, prepare: false, fetch_types: false, onnotice: () => {} })
      try {
        return [...(await sql.unsafe(command).simple())] as Record<string, unknown>[]
      } finally {
        await sql.end({ timeout: 1 })
      }
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGINT')
        await exited
      }
      await rm(dir, { recursive: true, force: true })
    },
  }
}

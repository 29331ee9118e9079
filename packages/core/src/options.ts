import type postgres from 'postgres'
import { invalidOption } from './errors.js'
import { redactUrls } from './redact.js'

export type SessionReset = 'auto' | 'always' | 'never'

/** Pool options; every duration is in milliseconds. */
export interface PoolOptions {
  /** Most server connections this pool opens. Default 10. */
  max?: number
  /** How long a request waits for a connection before a 503. Default 5000. */
  acquireTimeout?: number
  /** Requests allowed to wait at once; past it, an immediate 503. Default `10 × max`. */
  maxWaiting?: number
  /** Close a connection idle this long. 0 keeps idle connections. Default 30000. */
  idleTimeout?: number
  /** Retire a connection after this age, minus up to 15% jitter. 0 disables. Default 1800000. */
  maxLifetime?: number
  /** Give up opening a connection after this long. Default 5000. */
  connectTimeout?: number
  /**
   * Server-side `statement_timeout`. The client also gives up on a query that has not
   * answered 1 s after it (a frozen server never answers) and discards its connection.
   * 0 disables both. Default 30000.
   */
  statementTimeout?: number
  /** Warn when one request holds a connection longer than this. 0 disables. Default 30000. */
  leakDetectionThreshold?: number
  /** How long `app.close()` waits for leases and queries before cutting connections. Default 10000. */
  closeTimeout?: number
  /** `application_name` of every connection. Default `'fastify-pg-pool'`. */
  applicationName?: string
  /** PgBouncer transaction mode: no named prepared statements, no session reset. Default false. */
  pgbouncer?: boolean
  /** When to reset session state before a connection is reused. Default `'auto'`. */
  sessionReset?: SessionReset
  /** Seconds in the Retry-After header of pool 503s. Default 1. */
  retryAfter?: number
  /** Start without checking the database at `register`. Default false. */
  lazy?: boolean
  /**
   * Most requests of pipelined routes (`config.db: { pipeline: true }`) that share one
   * connection at once, their statements queued on it. Default 8.
   */
  pipelineDepth?: number
  /**
   * Instances of this app expected to run at once, for the connection budget warning.
   * Default: `PG_POOL_INSTANCES` from the environment, else 1.
   */
  instances?: number
}

export interface ResolvedPoolOptions {
  readonly max: number
  readonly acquireTimeout: number
  readonly maxWaiting: number
  readonly idleTimeout: number
  readonly maxLifetime: number
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
  /** Connection URL for postgres.js, if one was given. */
  readonly url: string | undefined
  /** postgres.js options, without the ones the pool owns. */
  readonly options: postgres.Options<{}>
  /** The password, kept only to scrub it from anything the suite prints. */
  readonly secret: string | undefined
  /** Where the pool connects, without credentials, for logs. */
  readonly target: string
}

const integerOptions = {
  max: { min: 1, default: 10 },
  acquireTimeout: { min: 1, default: 5_000 },
  maxWaiting: { min: 0, default: undefined },
  idleTimeout: { min: 0, default: 30_000 },
  maxLifetime: { min: 0, default: 30 * 60_000 },
  connectTimeout: { min: 1, default: 5_000 },
  statementTimeout: { min: 0, default: 30_000 },
  leakDetectionThreshold: { min: 0, default: 30_000 },
  closeTimeout: { min: 0, default: 10_000 },
  retryAfter: { min: 0, default: 1 },
  instances: { min: 1, default: 1 },
  pipelineDepth: { min: 1, default: 8 },
} as const

const knownPoolKeys = new Set([...Object.keys(integerOptions), 'applicationName', 'pgbouncer', 'sessionReset', 'lazy'])

/** Options the pool sets on every connection itself; given in `connection`, they are refused. */
const ownedConnectionKeys = ['max', 'idle_timeout', 'max_lifetime', 'debug'] as const

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(redactUrls(value))
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value)
  return typeof value
}

function toInteger(name: string, raw: unknown, min: number): number {
  const value = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : raw
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw invalidOption(name, `expected an integer >= ${min}, got ${describe(raw)}`)
  }
  return value
}

export function resolvePoolOptions(
  pool: PoolOptions | undefined,
  fromUrl: { max?: string | undefined; applicationName?: string | undefined },
  env: NodeJS.ProcessEnv,
): ResolvedPoolOptions {
  if (pool !== undefined && (pool === null || typeof pool !== 'object' || Array.isArray(pool))) {
    throw invalidOption('pool', `expected an object, got ${describe(pool)}`)
  }
  const given: Record<string, unknown> = { ...pool }
  for (const key of Object.keys(given)) {
    if (!knownPoolKeys.has(key)) throw invalidOption(`pool.${key}`, 'unknown option')
  }
  // option > URL > PG* env > default. postgres.js reads `max` from a URL as a string and
  // then builds a single connection; here it always becomes a number.
  given.max ??= fromUrl.max ?? env.PGMAX
  given.instances ??= env.PG_POOL_INSTANCES
  const out: Record<string, unknown> = {}
  for (const [name, spec] of Object.entries(integerOptions)) {
    const raw = given[name]
    out[name] = raw === undefined ? spec.default : toInteger(`pool.${name}`, raw, spec.min)
  }
  out.maxWaiting ??= (out.max as number) * 10
  const applicationName = given.applicationName ?? fromUrl.applicationName ?? env.PGAPPNAME
  if (applicationName !== undefined && (typeof applicationName !== 'string' || applicationName === '')) {
    throw invalidOption('pool.applicationName', `expected a non-empty string, got ${describe(applicationName)}`)
  }
  out.applicationName = applicationName ?? 'fastify-pg-pool'
  for (const name of ['pgbouncer', 'lazy'] as const) {
    const raw = given[name]
    if (raw !== undefined && typeof raw !== 'boolean') {
      throw invalidOption(`pool.${name}`, `expected a boolean, got ${describe(raw)}`)
    }
    out[name] = raw ?? false
  }
  const reset = given.sessionReset ?? 'auto'
  if (reset !== 'auto' && reset !== 'always' && reset !== 'never') {
    throw invalidOption('pool.sessionReset', `expected 'auto', 'always' or 'never', got ${describe(reset)}`)
  }
  out.sessionReset = reset
  return Object.freeze(out) as unknown as ResolvedPoolOptions
}

export function resolveConnection(
  connection: string | postgres.Options<{}> | undefined,
  env: NodeJS.ProcessEnv,
): { connection: ResolvedConnection; fromUrl: { max?: string; applicationName?: string } } {
  const fromUrl: { max?: string; applicationName?: string } = {}
  let url: string | undefined
  let options: postgres.Options<{}> = {}
  let secret: string | undefined
  let target: string
  if (typeof connection === 'string') {
    let parsed: URL
    try {
      parsed = new URL(connection)
    } catch {
      throw invalidOption('connection', `not a valid URL: ${describe(connection)}`)
    }
    if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
      throw invalidOption('connection', `expected a postgres:// URL, got ${describe(connection)}`)
    }
    secret = parsed.password ? decodeURIComponent(parsed.password) : undefined
    const max = parsed.searchParams.get('max')
    if (max !== null) fromUrl.max = max
    const app = parsed.searchParams.get('application_name')
    if (app !== null) fromUrl.applicationName = app
    // The pool owns these: postgres.js would let the URL override them.
    parsed.searchParams.delete('max')
    parsed.searchParams.delete('application_name')
    url = parsed.toString()
    target = `${parsed.hostname || 'localhost'}:${parsed.port || 5432}${parsed.pathname}`
  } else if (connection === undefined || connection === null) {
    target = `${env.PGHOST ?? 'localhost'}:${env.PGPORT ?? 5432}/${env.PGDATABASE ?? ''}`
  } else if (typeof connection === 'object' && !Array.isArray(connection)) {
    for (const key of ownedConnectionKeys) {
      if (key in connection && key !== 'max') {
        throw invalidOption(`connection.${key}`, 'is managed by the pool; use the pool options')
      }
    }
    const { max, ...rest } = connection as postgres.Options<{}> & { max?: unknown }
    if (max !== undefined) fromUrl.max = String(max)
    options = rest
    secret = typeof rest.password === 'string' ? rest.password : undefined
    const host = Array.isArray(rest.host) ? rest.host.join(',') : (rest.host ?? env.PGHOST ?? 'localhost')
    target = `${host}:${rest.port ?? env.PGPORT ?? 5432}/${rest.database ?? env.PGDATABASE ?? ''}`
  } else {
    throw invalidOption('connection', `expected a URL string or postgres.js options, got ${describe(connection)}`)
  }
  secret ??= env.PGPASSWORD || undefined
  return { connection: Object.freeze({ url, options, secret, target }), fromUrl }
}

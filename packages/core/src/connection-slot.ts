import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import postgres from 'postgres'
import type { ResolvedConnection, ResolvedPoolOptions } from './options.js'

/** The postgres.js query object, seen from the inside. */
export interface InternalQuery extends Promise<unknown> {
  strings: readonly string[]
  args: unknown[]
  executed: boolean
  active: boolean
  cancel(): unknown
  resolve(value: unknown): void
  reject(error: unknown): void
}

export type QueryHandler = (query: InternalQuery) => void
type QueryCanceller = (query: InternalQuery) => Promise<void>

export type CloseReason = 'idle' | 'lifetime' | 'error' | 'deadline' | 'shutdown'

let nextId = 1

/**
 * One server connection: a postgres.js client with `max: 1`, leased whole. Each slot owns its
 * client so no reserve() defect (#1195, #1199, #1208) applies, and its counts are exact.
 */
export class ConnectionSlot {
  readonly id = nextId++
  readonly sql: postgres.Sql<{}>
  /** postgres.js's own dispatch and cancel for this client (taken from a query it builds). */
  readonly send: QueryHandler
  readonly cancelQuery: QueryCanceller
  readonly createdAt = Date.now()
  readonly expiresAt: number
  idleSince = 0
  leasedAt = 0
  pid = 0
  /** Set when the connection saw a connection-level error; it is never leased again. */
  closeReason: CloseReason | undefined
  #ended: Promise<void> | undefined
  readonly #fetchTypes: boolean
  readonly #connectTimeout: number

  constructor(connection: ResolvedConnection, pool: ResolvedPoolOptions, onNotice: (notice: postgres.Notice) => void) {
    this.#connectTimeout = pool.connectTimeout
    this.expiresAt = pool.maxLifetime > 0 ? this.createdAt + pool.maxLifetime * (1 - Math.random() * 0.15) : Infinity
    const options: postgres.Options<{}> = {
      ...connection.options,
      max: 1,
      // null, not undefined: postgres.js would otherwise retire connections on its own timers.
      idle_timeout: null as unknown as undefined,
      max_lifetime: null,
      connect_timeout: pool.connectTimeout / 1000,
      prepare: pool.pgbouncer ? false : (connection.options.prepare ?? true),
      onnotice: onNotice,
      onclose: () => this.markClosed('error'),
      connection: {
        ...connection.options.connection,
        application_name: pool.applicationName,
        // PgBouncer refuses startup parameters it does not know: there, statement_timeout
        // belongs on the role or database (the client-side deadline still applies).
        ...(pool.statementTimeout > 0 && !pool.pgbouncer ? { statement_timeout: pool.statementTimeout } : {}),
      },
    }
    this.sql = connection.url === undefined ? postgres(options) : postgres(connection.url, options)
    // postgres.js loads array types on each new connection from a promise nobody handles: a
    // connection lost or a statement_timeout at that moment ends the process with an unhandled
    // rejection (porsager/postgres#1192, #1205, #1223). open() loads them instead, as an
    // ordinary query whose failure is a connect error. postgres.js reads this per connection.
    this.#fetchTypes = this.sql.options.fetch_types !== false
    ;(this.sql.options as { fetch_types: boolean }).fetch_types = false
    const probe = this.sql`select 1` as unknown as { handler: QueryHandler; canceller: QueryCanceller }
    this.send = probe.handler
    this.cancelQuery = probe.canceller
  }

  get usable(): boolean {
    return this.closeReason === undefined
  }

  /**
   * Connects and learns the backend pid; rejects with postgres.js's error. `arrayTypes` (the
   * helpers' map of array type oids) is filled from this connection's: sql.array() parameters
   * built before any connection existed read it when they are serialized.
   */
  async open(arrayTypes?: Record<number, number>): Promise<void> {
    // postgres.js's connect_timeout ends at the handshake: a server frozen right after it would
    // leave this connection opening forever, counted against max. The whole open is bounded.
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(Object.assign(new Error(`no answer within ${this.#connectTimeout} ms`), { code: 'CONNECT_TIMEOUT' }))
        void this.end('error', 0)
      }, this.#connectTimeout).unref()
    })
    const opening = this.#open(arrayTypes)
    opening.catch(() => {})
    try {
      await Promise.race([opening, deadline])
    } finally {
      clearTimeout(timer)
    }
  }

  async #open(arrayTypes: Record<number, number> | undefined): Promise<void> {
    const [row] = await this.sql<{ pid: number }[]>`select pg_backend_pid() as pid`
    this.pid = row?.pid ?? 0
    if (arrayTypes === undefined || !this.#fetchTypes) return
    // The oids are the server's: loaded once per pool, installed on every connection.
    if (Object.keys(arrayTypes).length === 0) {
      const rows = await this.sql.unsafe<{ oid: number | null; typarray: number | null }[]>(ARRAY_TYPES_SQL)
      for (const { oid, typarray } of rows) if (oid && typarray) arrayTypes[oid] = typarray
    }
    installArrayTypes(this.sql.options as unknown as TypeOptions, arrayTypes)
  }

  /** Marks the slot unusable; the first reason wins. */
  markClosed(reason: CloseReason): void {
    this.closeReason ??= reason
  }

  /**
   * Ends the client. `graceSeconds: 0` destroys the socket at once, rejecting whatever is
   * pending on it, which is the only way to free queries stuck on a frozen server.
   */
  end(reason: CloseReason, graceSeconds = 1): Promise<void> {
    this.markClosed(reason)
    this.#ended ??= this.sql.end({ timeout: graceSeconds }).catch(() => {})
    return this.#ended
  }
}

/** The query postgres.js's own fetchArrayTypes runs. */
const ARRAY_TYPES_SQL = `select b.oid, b.typarray from pg_catalog.pg_type a
  left join pg_catalog.pg_type b on b.oid = a.typelem
  where a.typcategory = 'A' group by b.oid, b.typarray order by b.oid`

type Parser = ((x: string) => unknown) & { array?: boolean }
type Serializer = (x: unknown) => unknown
interface TypeOptions {
  parsers: Record<number, Parser>
  serializers: Record<number, Serializer>
  shared: { typeArrayMap: Record<number, number> }
}
interface ArrayCodecs {
  arrayParser(x: string, parser: Parser | undefined, typarray: number): unknown
  arraySerializer(xs: unknown, serializer: Serializer | undefined, options: TypeOptions, typarray: number): unknown
}
// Not exported by the package: its array codecs, from its CommonJS build (pure functions).
const require = createRequire(import.meta.url)
const codecs = require(join(dirname(require.resolve('postgres')), 'types.js')) as ArrayCodecs

/** What postgres.js's addArrayType does for each row of its array types query. */
function installArrayTypes(options: TypeOptions, arrayTypes: Record<number, number>): void {
  for (const [key, typarray] of Object.entries(arrayTypes)) {
    const oid = Number(key)
    if (options.parsers[typarray] && options.serializers[typarray]) continue
    const parser = options.parsers[oid]
    options.shared.typeArrayMap[oid] = typarray
    const parse: Parser = (xs) => codecs.arrayParser(xs, parser, typarray)
    parse.array = true
    options.parsers[typarray] = parse
    options.serializers[typarray] = (xs) => codecs.arraySerializer(xs, options.serializers[oid], options, typarray)
  }
}

/** postgres.js keeps per-client type state in `options.shared` (not in its typings). */
export function sharedOf(sql: postgres.Sql<{}>): { typeArrayMap: Record<number, number> } {
  return (sql.options as unknown as { shared: { typeArrayMap: Record<number, number> } }).shared
}

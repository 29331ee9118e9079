import type { FastifyRequest } from 'fastify'
import type postgres from 'postgres'
import type { ConnectionBudget } from './connection-budget.js'
import type { PoolEvents, PoolStats } from './lease-pool.js'
import type { PoolOptions, ResolvedPoolOptions } from './options.js'

/** Mirrors postgres.js's (unexported) result type of begin(). */
export type UnwrapPromiseArray<T> = T extends unknown[]
  ? { [K in keyof T]: T[K] extends Promise<infer R> ? R : T[K] }
  : T

export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable'

export interface TransactionOptions {
  isolation?: IsolationLevel
  readOnly?: boolean
  deferrable?: boolean
}

type TransactionCallback<T> = (sql: postgres.TransactionSql<{}>) => T | Promise<T>

/** The postgres.js query API on one lease: queries, helpers, transactions. */
export interface LeaseDb extends postgres.ISql<{}> {
  /** A postgres.js transaction on this lease's connection (not inside a route transaction). */
  begin<T>(cb: TransactionCallback<T>): Promise<UnwrapPromiseArray<T>>
  begin<T>(options: string, cb: TransactionCallback<T>): Promise<UnwrapPromiseArray<T>>
  /** A savepoint inside the route's transaction: rolled back alone if `cb` throws. */
  savepoint<T>(cb: (sql: LeaseDb) => T | Promise<T>): Promise<UnwrapPromiseArray<T>>
  savepoint<T>(name: string, cb: (sql: LeaseDb) => T | Promise<T>): Promise<UnwrapPromiseArray<T>>
}

/** `request.db`: leased on its first query, returned when the request is over. */
export type RequestDb = LeaseDb

/** A lease taken by hand from `app.db.lease()`; call `release()` exactly when done. */
export interface LeasedDb extends LeaseDb {
  /** Returns the connection once its queries settled. Idempotent. */
  release(): Promise<void>
}

/** `app.db`: each query leases a connection and returns it when it settles. */
export interface PoolDb extends postgres.ISql<{}> {
  begin<T>(cb: TransactionCallback<T>): Promise<UnwrapPromiseArray<T>>
  begin<T>(options: string, cb: TransactionCallback<T>): Promise<UnwrapPromiseArray<T>>
  /** `begin` with typed options: one connection, committed when `cb` resolves. */
  transaction<T>(cb: TransactionCallback<T>, options?: TransactionOptions): Promise<UnwrapPromiseArray<T>>
  /** Holds one connection until `release()` (jobs, migrations, LISTEN-free session work). */
  lease(): Promise<LeasedDb>
}

/** Per-route options under `config.db`. `false`: the route never uses the database. */
export type RouteDbConfig =
  | false
  | {
      /** Run the request in one transaction: committed before the response, else rolled back. */
      transaction?: boolean | TransactionOptions
      /**
       * Session-free route: its request shares a connection with other pipelined requests
       * (up to `pool.pipelineDepth`), its statements queued behind theirs, for throughput.
       * No transactions, no onLease, no session state relied on between statements, and a
       * client abort lets running statements finish instead of cancelling them.
       */
      pipeline?: boolean
    }

type Listener<A extends unknown[]> = (...args: A) => void

/** The read-only view of the pool that health, metrics and backpressure use. */
export interface PgPoolView {
  /** Current counts; cheap enough to call on every request. */
  stats(): PoolStats
  /** Opens a connection outside the lease queue and runs `select`; resolves with ms. */
  ping(timeoutMs: number): Promise<number>
  on<E extends keyof PoolEvents>(event: E, listener: Listener<PoolEvents[E]>): PgPoolView
  off<E extends keyof PoolEvents>(event: E, listener: Listener<PoolEvents[E]>): PgPoolView
  /** Validated, frozen pool options. */
  readonly options: ResolvedPoolOptions
  /** host:port/database, without credentials. */
  readonly target: string
  /**
   * The pool's name in metrics labels and health checks: 'primary' for the default instance's
   * server (replicas and named instances get their own).
   */
  readonly name: string
  /** Where the pool connects (no credentials): for tracing attributes. */
  readonly endpoint: { readonly host: string; readonly port: number; readonly database: string }
  /** Removes the connection password from a text (for logs and bodies). */
  redact(text: string): string
  /**
   * The server's connection budget against `max × instances`, read once at startup (or after
   * the first connection when `lazy`); undefined until then, and behind PgBouncer.
   */
  budget(): ConnectionBudget | undefined
  /**
   * Records a request refused outside the core (admission control, process pressure) so that
   * listeners of the `shed` event (metrics) count it. `reason` is a short snake_case word.
   */
  shed(reason: string, route: string): void
}

export interface PgPoolCoreOptions {
  /** A postgres:// URL or postgres.js options; PG* environment variables fill the gaps. */
  connection?: string | postgres.Options<{}> | undefined
  pool?: PoolOptions | undefined
  /**
   * Prepares each request's connection before the handler's first query runs on it, e.g.
   * `db\`select set_config('app.tenant_id', ${id}, true)\`` for row-level security. Runs on
   * the request's connection, inside the route transaction when there is one. If it throws, the request's queries fail with its
   * error. State it sets with `set_config(..., false)` is reset before the next request.
   */
  onLease?: ((request: FastifyRequest, db: LeaseDb) => void | Promise<void>) | undefined
}

declare module 'fastify' {
  interface FastifyInstance {
    db: PoolDb
    pgPool: PgPoolView
  }
  interface FastifyRequest {
    db: RequestDb
  }
  interface FastifyContextConfig {
    db?: RouteDbConfig
  }
}

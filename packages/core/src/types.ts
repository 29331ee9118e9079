import type { FastifyRequest } from 'fastify'
import type * as postgres from 'postgres'
import type { ConnectionBudget } from './connection-budget.js'
import type { ErrorMapping } from './error-mapping.js'
import type { PgPoolRegistry } from './instances.js'
import type { ListenerStats, Listening, NotificationHandler } from './listener.js'
import type { ConnectionOptions, PoolOptions, ReplicaOptions, ReplicaTarget, ResolvedPoolOptions } from './options.js'
import type { PoolEvents, PoolStats } from './pool.js'
import type { ReplicaLag } from './replica-monitor.js'
import type { MaxLag } from './replica-router.js'

/** Mirrors postgres.js's (unexported) result type of begin(). */
export type UnwrapPromiseArray<T> = T extends unknown[]
  ? { [K in keyof T]: T[K] extends Promise<infer R> ? R : T[K] }
  : T

export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable'

export interface TransactionOptions {
  isolation?: IsolationLevel | undefined
  readOnly?: boolean | undefined
  deferrable?: boolean | undefined
}

type TransactionCallback<T> = (sql: LeaseDb) => T | Promise<T>

/** The postgres.js query API on one lease: queries, helpers, transactions. */
export interface LeaseDb extends postgres.ISql<{}> {
  /**
   * A transaction on this lease's connection: BEGIN, `cb`, COMMIT (ROLLBACK when `cb` throws).
   * Not inside a route transaction (use `savepoint`). `options` as postgres.js's: `'read write'`,
   * `'isolation level serializable'`.
   */
  begin<T>(cb: TransactionCallback<T>): Promise<UnwrapPromiseArray<T>>
  begin<T>(options: string, cb: TransactionCallback<T>): Promise<UnwrapPromiseArray<T>>
  /** A savepoint inside a transaction: rolled back alone if `cb` throws. */
  savepoint<T>(cb: (sql: LeaseDb) => T | Promise<T>): Promise<UnwrapPromiseArray<T>>
  savepoint<T>(name: string, cb: (sql: LeaseDb) => T | Promise<T>): Promise<UnwrapPromiseArray<T>>
  /** Returned by a `cursor()` callback, ends the cursor early (postgres.js's `sql.CLOSE`). */
  readonly CLOSE: object
  /** The same as `CLOSE`. */
  readonly END: object
  /**
   * Present when the instance has read replicas: the request's reads on a replica (a lease of
   * its own, routed like a `readOnly` route's), e.g. `await request.db.replica\`select ...\``.
   */
  readonly replica?: LeaseDb
}

/** `request.db`: leased on its first query, returned when the request is over. */
export type RequestDb = LeaseDb

/** A lease taken by hand from `app.db.lease()`; call `release()` exactly when done. */
export interface LeasedDb extends LeaseDb {
  /** Returns the connection once its queries settled (with the session reset). Idempotent. */
  release(): Promise<void>
}

/** `app.db.replica`: `app.db`'s queries, served like a `readOnly` route's. */
export interface ReplicaDb extends postgres.ISql<{}> {
  /** Returned by a `cursor()` callback, ends the cursor early (postgres.js's `sql.CLOSE`). */
  readonly CLOSE: object
  /** The same as `CLOSE`. */
  readonly END: object
  begin<T>(cb: TransactionCallback<T>): Promise<UnwrapPromiseArray<T>>
  begin<T>(options: string, cb: TransactionCallback<T>): Promise<UnwrapPromiseArray<T>>
  /** `begin` with typed options: one connection, committed when `cb` resolves. */
  transaction<T>(cb: TransactionCallback<T>, options?: TransactionOptions): Promise<UnwrapPromiseArray<T>>
  /** Holds one connection until `release()` (jobs, migrations, session work). */
  lease(): Promise<LeasedDb>
}

/** `app.db`: each query leases a connection and returns it when it settles. */
export interface PoolDb extends ReplicaDb {
  /**
   * LISTEN on `channel`, on a connection of the instance's own outside the lease pool, listened to
   * again after it is lost (server restart, terminated backend); resolves once the server listens.
   * Every listener ends on `app.close()`.
   */
  listen(channel: string, onNotify: NotificationHandler): Promise<Listening>
  /**
   * Present when the instance has read replicas: reads outside a request (jobs) routed like a
   * `readOnly` route's (a usable replica, else the primary, read-only), e.g.
   * `await app.db.replica\`select ...\``. No `listen` (LISTEN is the primary's).
   */
  readonly replica?: ReplicaDb
}

/**
 * Options of a route transaction given as an object: at least one, so that an object holding
 * only a misspelled key (`{ isolaton: ... }`) is a type error.
 */
export type RouteTransactionOptions = {
  [K in keyof TransactionOptions]-?: Required<Pick<TransactionOptions, K>> & Omit<TransactionOptions, K>
}[keyof TransactionOptions]

/**
 * Per-route options under `config.db`. `false`: the route never uses the database. Each object
 * form requires its key, so that a misspelled one alone (`{ transacton: true }`) fails the build
 * (Fastify merges a route's config literal with FastifyContextConfig, which lets extra keys by).
 */
export type RouteDbConfig =
  | false
  | {
      /** Run the request in one transaction: committed before the response, else rolled back. */
      transaction: boolean | RouteTransactionOptions
      pipeline?: false | undefined
      /** The named instance `request.db` uses on this route (default: the default instance). */
      instance?: string | undefined
      /** Reads only: served by a replica when one is usable (else by the primary, read-only). */
      readOnly?: boolean | undefined
    }
  | {
      /**
       * Session-free route: its request shares a connection with other pipelined requests
       * (up to `pool.pipelineDepth`), its statements queued behind theirs, for throughput.
       * No transactions, no onLease, no session state relied on between statements, and a
       * client abort lets running statements finish instead of cancelling them.
       */
      pipeline: boolean
      transaction?: false | undefined
      instance?: string | undefined
      readOnly?: boolean | undefined
    }
  | {
      /** The named instance `request.db` uses on this route. */
      instance: string
      transaction?: false | undefined
      pipeline?: false | undefined
      readOnly?: boolean | undefined
    }
  | {
      /**
       * Reads only: served by a replica when one is usable (least leases out, within maxLag, and
       * with read-your-writes past the client's own write), else by the primary in a read-only
       * session. A write fails with 25006 either way.
       */
      readOnly: boolean
      transaction?: false | undefined
      pipeline?: false | undefined
      instance?: string | undefined
    }

/**
 * Named instances, for exact types of `app.dbs` and `request.dbs`: declare yours with
 * `declare module '@fastify-pg-pool/core' { interface PgPoolInstances { reporting: true } }`.
 */
// biome-ignore lint/suspicious/noEmptyInterface: filled by declaration merging
export interface PgPoolInstances {}

/** `app.dbs` or `request.dbs`: one entry per named instance. */
export type NamedDbs<T> = { readonly [K in keyof PgPoolInstances]: T } & { readonly [name: string]: T | undefined }

type Listener<A extends unknown[]> = (...args: A) => void

/** A replica pool's routing state. */
export interface ReplicaState {
  /** Its lag at the last sample (undefined before the first). */
  readonly lag: ReplicaLag | undefined
  /** Whether reads go to it now: sampled recently, reachable, a standby, within maxLag. */
  readonly usable: boolean
  readonly maxLag: MaxLag
}

/** The read-only view of one pool that health, metrics, backpressure and tracing use. */
export interface PgPoolView {
  /** Current counts; cheap enough to call on every request. */
  stats(): PoolStats
  /**
   * Whether a request that finds no connection free would be refused now (the queue at its
   * cap): the core's rule, for admission control to apply at the door.
   */
  wouldRefuse(pipelined?: boolean): boolean
  /** Opens a connection outside the lease queue and runs a statement; resolves with ms. */
  ping(timeoutMs: number): Promise<number>
  /** The LISTEN connection's counts (`app.db.listen`): handlers, channels, connected, notifications. */
  listener(): ListenerStats
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
  /** The instance it belongs to: undefined for the default one, else its `name`. */
  readonly instance: string | undefined
  /** `primary`, or `replica` for a read replica's pool. */
  readonly role: 'primary' | 'replica'
  /** Where the pool connects (no credentials): for tracing attributes. */
  readonly endpoint: { readonly host: string; readonly port: number; readonly database: string }
  /** A replica pool's lag and whether it gets reads; undefined for a primary. */
  replica(): ReplicaState | undefined
  /** Removes the connection password from a text (for logs and bodies). */
  redact(text: string): string
  /**
   * The server's connection budget against `max × instances`, read once at startup (or after
   * the first connection when `lazy`); undefined until then, and behind PgBouncer.
   */
  budget(): ConnectionBudget | undefined
}

export interface PgPoolCoreOptions {
  /**
   * Registers a named instance (a second database) beside the default one: `app.dbs.<name>`,
   * `request.dbs.<name>`, `config.db.instance: '<name>'`, its own pool, health entry and metric
   * label. Without a name, the default instance: `app.db`, `request.db`, `app.pgPool`.
   */
  name?: string | undefined
  /** A postgres:// URL or postgres.js options; `DATABASE_URL`, then PG* environment variables fill the gaps. */
  connection?: string | ConnectionOptions | undefined
  pool?: PoolOptions | undefined
  /**
   * Read replicas (streaming standbys) of this instance's primary: a URL, postgres.js options, or
   * `{ connection, pool }` with pool options of its own (the primary's otherwise). Reads of routes
   * with `config.db.readOnly` (and `request.db.replica`, `app.db.replica`) go to them.
   */
  replicas?: readonly ReplicaTarget[] | undefined
  /** How reads are routed to replicas: lag bound, sampling, read-your-writes. */
  replica?: ReplicaOptions | undefined
  /**
   * Prepares each request's connection before the handler's first query runs on it, e.g.
   * `db\`select set_config('app.tenant_id', ${id}, true)\`` for row-level security. Runs on
   * the request's connection, inside the route transaction when there is one. If it throws, the
   * request's queries fail with its error. The session is reset before the next request.
   */
  onLease?: ((request: FastifyRequest, db: LeaseDb) => void | Promise<void>) | undefined
  /**
   * Runs once on each new server connection, before any request gets it: `set search_path`, a
   * role, settings every request relies on, type lookups. What it leaves on the session is
   * restored by every session reset (temp tables it creates are not kept). If it throws, the
   * connection is not used (FST_PG_POOL_CONNECT_FAILED). Not per request: see `onLease`.
   */
  onConnect?: ((db: postgres.Sql<{}>) => void | Promise<void>) | undefined
  /**
   * The application_name a request's session shows while it holds its connection (e.g. the
   * trace's traceparent and the route, so that pg_stat_activity ties a running statement to its
   * trace), or undefined to keep the pool's. Called when the lease gets its connection, in the
   * request's async context; sent ahead of its first statement without a round trip; the
   * session reset restores the pool's name. Not for pipelined routes (a shared session).
   */
  leaseApplicationName?: ((request: FastifyRequest | undefined, route: string) => string | undefined) | undefined
  /**
   * HTTP status of PostgreSQL errors by SQLSTATE (5 characters) or class (2), merged over the
   * defaults (22xxx, 23502 → 400; 23505, 23503, 23514 → 409; 40001, 40P01, 53300, 57014, 08xxx →
   * 503; else 500). `false`: PostgreSQL errors reach the error handler untouched.
   */
  errorMapping?: ErrorMapping | undefined
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The default instance's pool-level query API. */
    db: PoolDb
    /** The default instance's primary pool. */
    pgPool: PgPoolView
    /** Every pool of every instance (health, metrics, tracing read it). */
    pgPools: PgPoolRegistry
    /** The named instances' pool-level query APIs. */
    dbs: NamedDbs<PoolDb>
  }
  interface FastifyRequest {
    /** The request's lease on its route's instance (the default one unless `config.db.instance`). */
    db: RequestDb
    /** The request's leases on the named instances, each taken on its first query. */
    dbs: NamedDbs<RequestDb>
  }
  interface FastifyContextConfig {
    db?: RouteDbConfig | undefined
  }
}

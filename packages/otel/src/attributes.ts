/**
 * Attribute and instrument names. The `db.*`, `server.*` and `error.type` names are the
 * OpenTelemetry semantic conventions' (a test compares them with
 * `@opentelemetry/semantic-conventions`); written out here so that the package depends on
 * `@opentelemetry/api` alone. The `fastify_pg_pool.*` names are this suite's own.
 */
export const ATTR = Object.freeze({
  dbSystemName: 'db.system.name',
  dbNamespace: 'db.namespace',
  dbOperationName: 'db.operation.name',
  dbQuerySummary: 'db.query.summary',
  dbQueryText: 'db.query.text',
  dbResponseStatusCode: 'db.response.status_code',
  serverAddress: 'server.address',
  serverPort: 'server.port',
  errorType: 'error.type',
  poolName: 'db.client.connection.pool.name',
  connectionState: 'db.client.connection.state',
  /** Route template of the request (or `app.db` for work outside requests). */
  route: 'fastify_pg_pool.route',
  /** Leases already waiting when this one joined the queue. */
  acquireQueued: 'fastify_pg_pool.acquire.queued',
  /** `route` (config.db.transaction) or `begin`. */
  transactionKind: 'fastify_pg_pool.transaction.kind',
  /** `commit`, `rollback`, `commit_failed`, `commit_unknown`. */
  transactionOutcome: 'fastify_pg_pool.transaction.outcome',
  /** Why admission control refused the request (`queue_full`, `queue_delay`, `process`, ...). */
  refusalReason: 'fastify_pg_pool.refusal.reason',
} as const)

export const DB_SYSTEM_POSTGRESQL = 'postgresql'

export const METRIC = Object.freeze({
  connectionCount: 'db.client.connection.count',
  idleMax: 'db.client.connection.idle.max',
  idleMin: 'db.client.connection.idle.min',
  max: 'db.client.connection.max',
  pendingRequests: 'db.client.connection.pending_requests',
  timeouts: 'db.client.connection.timeouts',
  createTime: 'db.client.connection.create_time',
  waitTime: 'db.client.connection.wait_time',
  useTime: 'db.client.connection.use_time',
  operationDuration: 'db.client.operation.duration',
} as const)

/** The span names this package gives that are not a statement's query summary. */
export const SPAN = Object.freeze({
  acquire: 'acquire connection',
  transaction: 'transaction',
} as const)

/** The span event a refused request carries. */
export const REFUSAL_EVENT = 'fastify_pg_pool.refusal'

/**
 * `db.client.operation.duration` buckets, seconds: the conventions' advice. The pool's own
 * histograms (create, wait, use time) use them too: a connection opens, waits and is held
 * within the same span of a millisecond to ten seconds.
 */
export const DURATION_BUCKETS: readonly number[] = Object.freeze([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10])

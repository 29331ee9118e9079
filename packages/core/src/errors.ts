import { createError, type FastifyErrorConstructor } from '@fastify/error'

/**
 * Every error the core raises. Each code is documented in the package README
 * (a test checks that), and carries the HTTP status the default error handler uses.
 */
export const errors = {
  FST_PG_POOL_ACQUIRE_TIMEOUT: createError(
    'FST_PG_POOL_ACQUIRE_TIMEOUT',
    'Timed out after %d ms waiting for a database connection',
    503,
  ),
  FST_PG_POOL_QUEUE_FULL: createError(
    'FST_PG_POOL_QUEUE_FULL',
    'Too many requests are waiting for a database connection (maxWaiting %d)',
    503,
  ),
  FST_PG_POOL_CLOSED: createError('FST_PG_POOL_CLOSED', 'The database pool is closed', 503),
  // The driver's error (host, port, its code) is the cause: in the log, never in the body.
  FST_PG_POOL_CONNECT_FAILED: createError('FST_PG_POOL_CONNECT_FAILED', 'Could not connect to the database', 503),
  FST_PG_POOL_CONNECTION_LOST: createError('FST_PG_POOL_CONNECTION_LOST', 'The database connection was lost (%s)', 503),
  FST_PG_POOL_QUERY_TIMEOUT: createError('FST_PG_POOL_QUERY_TIMEOUT', 'The database did not answer within %s', 503),
  FST_PG_POOL_NOT_PRIMARY: createError(
    'FST_PG_POOL_NOT_PRIMARY',
    'The database server is not the primary (a failover is under way); retry later',
    503,
  ),
  FST_PG_POOL_ABORTED: createError('FST_PG_POOL_ABORTED', 'The request ended before its database work finished', 503),
  FST_PG_POOL_RELEASED: createError(
    'FST_PG_POOL_RELEASED',
    'request.db was used after its request finished; its connection is back in the pool',
    500,
  ),
  FST_PG_POOL_COMMIT_FAILED: createError('FST_PG_POOL_COMMIT_FAILED', 'The transaction was not committed (%s)', 500),
  // 503: the cause is transient (a lost connection, a failover); retry only an idempotent request.
  FST_PG_POOL_COMMIT_UNKNOWN: createError(
    'FST_PG_POOL_COMMIT_UNKNOWN',
    'COMMIT was sent and no answer came (%s): the transaction may have been committed',
    503,
  ),
  FST_PG_POOL_NESTED_TRANSACTION: createError(
    'FST_PG_POOL_NESTED_TRANSACTION',
    'This route already runs in a transaction; use request.db.savepoint() instead of begin()',
    500,
  ),
  FST_PG_POOL_OUTSIDE_BLOCK: createError(
    'FST_PG_POOL_OUTSIDE_BLOCK',
    'A statement was sent outside the open begin() block or savepoint() (on request.db while one is open, or on the handle of a block that has ended): send it on the handle the open block or savepoint gave its callback, or on request.db after it',
    500,
  ),
  FST_PG_POOL_TRANSACTION_ENDED: createError(
    'FST_PG_POOL_TRANSACTION_ENDED',
    'A statement of the handler ended the transaction (%s in SQL): the statements after it were refused; what ran before it, and any statement already sent behind it, may be committed',
    500,
  ),
  FST_PG_POOL_ROUTE_OPTED_OUT: createError(
    'FST_PG_POOL_ROUTE_OPTED_OUT',
    'Route %s declares config.db: false and cannot use request.db',
    500,
  ),
  FST_PG_POOL_PIPELINED: createError(
    'FST_PG_POOL_PIPELINED',
    'Route %s is pipelined (config.db.pipeline) and shares its connection: %s needs a connection of its own',
    500,
  ),
  FST_PG_POOL_UNKNOWN_INSTANCE: createError(
    'FST_PG_POOL_UNKNOWN_INSTANCE',
    'No database instance %s is registered (%s)',
    500,
  ),
  FST_PG_POOL_INVALID_OPTION: createError('FST_PG_POOL_INVALID_OPTION', 'Invalid option %s: %s', 500),
} as const satisfies Record<string, FastifyErrorConstructor>

export type PgPoolErrorCode = keyof typeof errors

/** Codes that mean "try again shortly": the reply gets a Retry-After header. */
export const retryableCodes: ReadonlySet<string> = new Set<PgPoolErrorCode>([
  'FST_PG_POOL_ACQUIRE_TIMEOUT',
  'FST_PG_POOL_QUEUE_FULL',
  'FST_PG_POOL_CLOSED',
  'FST_PG_POOL_CONNECT_FAILED',
  'FST_PG_POOL_CONNECTION_LOST',
  'FST_PG_POOL_QUERY_TIMEOUT',
  'FST_PG_POOL_NOT_PRIMARY',
  'FST_PG_POOL_COMMIT_UNKNOWN',
])

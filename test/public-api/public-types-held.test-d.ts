import pgPoolBackpressure, { type PgPoolBackpressureErrorCode } from '@fastify-pg-pool/backpressure'
import type {
  AcquireFailure,
  CloseReason,
  FallbackReason,
  LeaseDb,
  LeasedDb,
  ListenerStats,
  PoolDb,
  ReplicaDb,
  TransactionOutcome,
} from '@fastify-pg-pool/core'
import pgPoolHealth, { type HealthResponse } from '@fastify-pg-pool/health'
import pgPoolMetrics, { type PgPoolMetricsErrorCode } from '@fastify-pg-pool/metrics'
import pgPoolOtel, { type PgPoolOtelErrorCode } from '@fastify-pg-pool/otel'
import Fastify from 'fastify'
import pgPool, {
  type DatabaseError,
  errors,
  type PgPoolErrorCode,
  type PgPoolOptions,
  type RequestDb,
} from 'fastify-pg-pool'
import type postgres from 'postgres'
import { describe, expectTypeOf, test } from 'vitest'

// Hostile probing (types): what held. Every line marked @ts-expect-error is an error today, every
// other line compiles, and no public type checked here is `any`.

const handler = async () => null

describe('request.db, app.db, leases and blocks', () => {
  test('forbidden members are absent from every handle, as at run time', async () => {
    const app = Fastify()
    await app.register(pgPool, { connection: 'postgres://localhost/x' })
    app.get('/', async (request) => {
      const db = request.db
      expectTypeOf(db).not.toBeAny()
      // @ts-expect-error LISTEN is app.db.listen's, not a request's
      db.listen('orders', () => {})
      // @ts-expect-error the pool owns its connections
      db.end()
      // @ts-expect-error no subscribe (logical replication needs a connection of its own)
      db.subscribe('*', () => {})
      // @ts-expect-error no options: the request's client is not a postgres.js Sql
      db.options
      // @ts-expect-error no transaction(): that is app.db's; in a request, begin()
      db.transaction(async () => 1)
      // @ts-expect-error no lease() on a request
      db.lease()
      await db.begin(async (tx) => {
        expectTypeOf(tx).toEqualTypeOf<LeaseDb>()
        // @ts-expect-error nor on a block's handle
        tx.end()
        // @ts-expect-error nor release()
        tx.release()
        const one = await tx.savepoint('named', async (sp) => {
          expectTypeOf(sp).toEqualTypeOf<LeaseDb>()
          return 1 as const
        })
        expectTypeOf(one).toEqualTypeOf<1>()
      })
      return null
    })
    expectTypeOf(app.db).toEqualTypeOf<PoolDb>()
    // @ts-expect-error app.db has no savepoint (each of its queries is a lease of its own)
    app.db.savepoint
    // @ts-expect-error nor end()
    app.db.end()
    const lease = await app.db.lease()
    expectTypeOf(lease).toEqualTypeOf<LeasedDb>()
    expectTypeOf(lease.release()).toEqualTypeOf<Promise<void>>()
    // @ts-expect-error a lease does not listen
    lease.listen('x', () => {})
    const replica = app.db.replica
    if (replica) {
      expectTypeOf(replica).toEqualTypeOf<ReplicaDb>()
      expectTypeOf(replica.transaction(async () => 'x', { readOnly: true })).resolves.toEqualTypeOf<string>()
    }
  })

  test('queries are typed by the generic: rows, cursors, forEach, values, begin results', async () => {
    const app = Fastify()
    app.get('/', async (request) => {
      const rows = await request.db<{ id: number; name: string }[]>`select 1 as id, 'a' as name`
      expectTypeOf(rows).toEqualTypeOf<postgres.RowList<{ id: number; name: string }[]>>()
      expectTypeOf(rows.count).toBeNumber()
      expectTypeOf(rows.command).not.toBeAny()
      for await (const batch of request.db<{ id: number }[]>`select 1 as id`.cursor(10)) {
        expectTypeOf(batch).toEqualTypeOf<{ id: number }[]>()
      }
      await request.db<{ id: number }[]>`select 1 as id`.forEach((row) => {
        expectTypeOf(row).toEqualTypeOf<{ id: number }>()
      })
      const values = await request.db<{ id: number }[]>`select 1 as id`.values()
      expectTypeOf(values).not.toBeAny()
      const pair = await request.db.begin('read write', (tx) => [tx`select 1`, tx`select 2`])
      expectTypeOf(pair[0]).toEqualTypeOf<postgres.RowList<postgres.Row[]> | undefined>()
      const unsafe = await request.db.unsafe<{ id: number }[]>('select $1::int as id', [1])
      expectTypeOf(unsafe[0]).toEqualTypeOf<{ id: number } | undefined>()
      expectTypeOf(request.db).toEqualTypeOf<RequestDb>()
      return null
    })
    const counted = await app.db.transaction(async (sql) => sql<{ n: number }[]>`select 1 as n`)
    // As postgres.js's own begin() types it (UnwrapPromiseArray maps the row list): rows and count stay typed.
    expectTypeOf(counted).not.toBeAny()
    expectTypeOf(counted[0]?.n).toEqualTypeOf<number | undefined>()
    expectTypeOf(counted.count).toBeNumber()
    expectTypeOf(app.db.listen('orders', ({ channel, payload }) => `${channel}${payload}`)).resolves.toHaveProperty(
      'unlisten',
    )
  })
})

describe('the view and its events', () => {
  test('event argument unions are exactly the documented ones', async () => {
    expectTypeOf<CloseReason>().toEqualTypeOf<
      'idle' | 'lifetime' | 'statements' | 'parameters' | 'error' | 'deadline' | 'shutdown'
    >()
    expectTypeOf<AcquireFailure>().toEqualTypeOf<'timeout' | 'rejected' | 'aborted' | 'error'>()
    expectTypeOf<FallbackReason>().toEqualTypeOf<'no_replica' | 'lagging' | 'behind_write' | 'unreachable'>()
    expectTypeOf<TransactionOutcome>().toEqualTypeOf<'commit' | 'rollback' | 'commit_failed' | 'commit_unknown'>()
    expectTypeOf<keyof ListenerStats>().toEqualTypeOf<
      'listeners' | 'channels' | 'connected' | 'notifications' | 'reconnections'
    >()
    const app = Fastify()
    expectTypeOf(app.pgPool.on('close', () => {})).toEqualTypeOf(app.pgPool)
    // @ts-expect-error there is no 'error' event (the migration guide: a failed connection is replaced)
    app.pgPool.on('error', () => {})
    app.pgPool.on('acquireError', (reason, waitMs) => {
      expectTypeOf(reason).toEqualTypeOf<AcquireFailure>()
      expectTypeOf(waitMs).toBeNumber()
    })
    expectTypeOf(app.pgPool.stats()).not.toBeAny()
    expectTypeOf(app.pgPool.options).not.toBeAny()
    expectTypeOf(app.pgPool.budget()).not.toBeAny()
    expectTypeOf(app.pgPoolMetrics).not.toBeAny()
  })
})

describe('errors', () => {
  test('the umbrella has every code of every package, each with its literal code and status', () => {
    expectTypeOf<PgPoolErrorCode>().toEqualTypeOf<
      | 'FST_PG_POOL_ACQUIRE_TIMEOUT'
      | 'FST_PG_POOL_QUEUE_FULL'
      | 'FST_PG_POOL_CLOSED'
      | 'FST_PG_POOL_CONNECT_FAILED'
      | 'FST_PG_POOL_CONNECTION_LOST'
      | 'FST_PG_POOL_QUERY_TIMEOUT'
      | 'FST_PG_POOL_NOT_PRIMARY'
      | 'FST_PG_POOL_ABORTED'
      | 'FST_PG_POOL_RELEASED'
      | 'FST_PG_POOL_COMMIT_FAILED'
      | 'FST_PG_POOL_COMMIT_UNKNOWN'
      | 'FST_PG_POOL_NESTED_TRANSACTION'
      | 'FST_PG_POOL_OUTSIDE_BLOCK'
      | 'FST_PG_POOL_TRANSACTION_ENDED'
      | 'FST_PG_POOL_ROUTE_OPTED_OUT'
      | 'FST_PG_POOL_PIPELINED'
      | 'FST_PG_POOL_UNKNOWN_INSTANCE'
      | 'FST_PG_POOL_INVALID_OPTION'
      | 'FST_PG_POOL_METRICS_DUPLICATE'
      | 'FST_PG_POOL_OVERLOADED'
      | 'FST_PG_POOL_PROCESS_PRESSURE'
    >()
    expectTypeOf<PgPoolMetricsErrorCode>().toEqualTypeOf<
      'FST_PG_POOL_INVALID_OPTION' | 'FST_PG_POOL_METRICS_DUPLICATE'
    >()
    expectTypeOf<PgPoolBackpressureErrorCode>().toEqualTypeOf<
      | 'FST_PG_POOL_QUEUE_FULL'
      | 'FST_PG_POOL_OVERLOADED'
      | 'FST_PG_POOL_PROCESS_PRESSURE'
      | 'FST_PG_POOL_INVALID_OPTION'
    >()
    expectTypeOf<PgPoolOtelErrorCode>().toEqualTypeOf<'FST_PG_POOL_INVALID_OPTION'>()
    const overloaded = new errors.FST_PG_POOL_OVERLOADED()
    expectTypeOf(overloaded).not.toBeAny()
    expectTypeOf(overloaded.code).toEqualTypeOf<'FST_PG_POOL_OVERLOADED'>()
    expectTypeOf(overloaded.statusCode).toEqualTypeOf<503>()
    expectTypeOf(new errors.FST_PG_POOL_COMMIT_UNKNOWN().statusCode).toEqualTypeOf<503>()
    expectTypeOf(new errors.FST_PG_POOL_COMMIT_FAILED().statusCode).toEqualTypeOf<500>()
    expectTypeOf(new errors.FST_PG_POOL_RELEASED().statusCode).toEqualTypeOf<500>()
    expectTypeOf(new errors.FST_PG_POOL_METRICS_DUPLICATE().statusCode).toEqualTypeOf<500>()
    expectTypeOf(new errors.FST_PG_POOL_PROCESS_PRESSURE().statusCode).toEqualTypeOf<503>()
  })

  test('DatabaseError (nodenext) is a postgres.js error with the documented fields', () => {
    const error = {} as DatabaseError
    expectTypeOf(error).not.toBeAny()
    expectTypeOf(error).toExtend<Error>()
    expectTypeOf(error.code).toBeString()
    expectTypeOf(error.statusCode).toBeNumber()
    expectTypeOf(error.constraint_name).toEqualTypeOf<string | undefined>()
    expectTypeOf(error.serverMessage).toBeString()
  })
})

describe('plugin options: documented types accepted, wrong ones and typos refused', () => {
  test('otel (alone and in the umbrella)', async () => {
    const app = Fastify()
    await app.register(pgPoolOtel, { traces: true, metrics: false, queryText: true, poolName: (view) => view.name })
    await app.register(pgPoolOtel, { pools: (instance) => instance.pgPools.all() })
    // @ts-expect-error queryTxt
    await app.register(pgPoolOtel, { queryTxt: true })
    // @ts-expect-error traceContext is the umbrella's (the core's leaseApplicationName)
    await app.register(pgPoolOtel, { traceContext: true })
    // @ts-expect-error traces is a boolean
    await app.register(pgPoolOtel, { traces: 'on' })
    await app.register(pgPool, { otel: { traceContext: true, queryText: false, poolName: (view) => view.target } })
    // @ts-expect-error otel takes options or false
    await app.register(pgPool, { otel: true })
    // @ts-expect-error tracecontext
    await app.register(pgPool, { otel: { tracecontext: true } })
    expectTypeOf<PgPoolOptions['otel']>().not.toBeAny()
  })

  test('backpressure, metrics and health value types', async () => {
    const app = Fastify()
    await app.register(pgPoolBackpressure, {
      target: 40,
      interval: 100,
      maxDelay: 60,
      retryStorm: { factor: 10, delay: 500 },
      minRetryAfter: 1,
      maxRetryAfter: 30,
      exempt: ['/health', '/metrics'],
      process: {
        maxEventLoopDelay: 1000,
        maxEventLoopUtilization: 0.9,
        maxHeapUsedBytes: 0,
        maxRssBytes: 0,
        sampleInterval: 1000,
      },
    })
    // @ts-expect-error exempt is a list of prefixes
    await app.register(pgPoolBackpressure, { exempt: '/health' })
    // @ts-expect-error sampleInterval is ms
    await app.register(pgPoolBackpressure, { process: { sampleInterval: '1s' } })
    // @ts-expect-error retryStorm is options or false
    await app.register(pgPoolBackpressure, { retryStorm: true })
    await app.register(pgPoolMetrics, {
      maxRoutes: 100,
      defaultMetrics: false,
      buckets: { http: [0.1, 1], lease: [1] },
    })
    // @ts-expect-error maxRoutes is a number
    await app.register(pgPoolMetrics, { maxRoutes: '100' })
    // @ts-expect-error buckets are lists
    await app.register(pgPoolMetrics, { buckets: { http: 1 } })
    await app.register(pgPoolHealth, { drainDelay: 5_000, requireDatabase: 'always' })
    // @ts-expect-error drainDelay is ms
    await app.register(pgPoolHealth, { drainDelay: '5s' })
    // @ts-expect-error not a requireDatabase mode
    await app.register(pgPoolHealth, { requireDatabase: 'never' })
    expectTypeOf<HealthResponse>().not.toBeAny()
  })

  test('core: pool values, sessionReset modes, transaction options', async () => {
    const app = Fastify()
    await app.register(pgPool, { pool: { sessionReset: 'rollback', pipelineDepth: 4, instances: 3, retryAfter: 2 } })
    // @ts-expect-error not a sessionReset mode
    await app.register(pgPool, { pool: { sessionReset: 'discard' } })
    // @ts-expect-error lazy is a boolean
    await app.register(pgPool, { pool: { lazy: 'yes' } })
    // @ts-expect-error errorMapping maps to statuses
    await app.register(pgPool, { errorMapping: { '23505': 'conflict' } })
    // @ts-expect-error replicas is a list
    await app.register(pgPool, { replicas: 'postgres://replica/app' })
    // @ts-expect-error read-your-writes needs its secret
    await app.register(pgPool, { replica: { readYourWrites: { header: 'x-token' } } })
    // @ts-expect-error not an isolation level
    app.post('/a', { config: { db: { transaction: { isolation: 'snapshot' } } } }, handler)
    // @ts-expect-error deferrable is a boolean
    app.post('/b', { config: { db: { transaction: { deferrable: 'yes' } } } }, handler)
    // A read-only route may be pipelined or a transaction (both are served at run time).
    app.get('/c', { config: { db: { pipeline: true, readOnly: true } } }, handler)
    app.get('/d', { config: { db: { transaction: { isolation: 'repeatable read' }, readOnly: true } } }, handler)
  })
})

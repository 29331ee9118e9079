import type { LeasedDb, PgPoolView, PoolStats, RequestDb, RouteDbConfig } from '@fastify-pg-pool/core'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyRequest } from 'fastify'
import type postgres from 'postgres'
import { describe, expectTypeOf, test } from 'vitest'

describe('types', () => {
  test('request.db and app.db', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, { connection: 'postgres://localhost/x', pool: { max: 5 } })
    app.get('/', async (request) => {
      expectTypeOf(request.db).toEqualTypeOf<RequestDb>()
      const rows = await request.db<{ id: number }[]>`select 1 as id`
      expectTypeOf(rows[0]).toEqualTypeOf<{ id: number } | undefined>()
      expectTypeOf(request.db`select 1`).toMatchTypeOf<postgres.PendingQuery<postgres.Row[]>>()
      expectTypeOf(request.db.unsafe).toBeFunction()
      const value = await request.db.savepoint(async (sql) => {
        expectTypeOf(sql).toEqualTypeOf<RequestDb>()
        return 42
      })
      expectTypeOf(value).toEqualTypeOf<number>()
      // @ts-expect-error request.db has no end(): the pool owns its connections
      request.db.end()
      // @ts-expect-error nor reserve()
      request.db.reserve()
      return null
    })
    expectTypeOf(app.db.lease()).resolves.toEqualTypeOf<LeasedDb>()
    expectTypeOf(app.db.transaction(async () => 'x', { isolation: 'serializable' })).resolves.toEqualTypeOf<string>()
    // @ts-expect-error not an isolation level
    app.db.transaction(async () => 'x', { isolation: 'chaos' })
    // app.db.replica (jobs' reads, docs/replicas.md): present only with replicas, without listen.
    const replicaDb = app.db.replica
    // @ts-expect-error possibly undefined: there only when the instance has replicas
    replicaDb`select 1`
    if (replicaDb !== undefined) {
      expectTypeOf(replicaDb<{ id: number }[]>`select 1 as id`).resolves.toEqualTypeOf<
        postgres.RowList<{ id: number }[]>
      >()
      expectTypeOf(replicaDb.lease()).resolves.toEqualTypeOf<LeasedDb>()
      // @ts-expect-error LISTEN is the primary's
      replicaDb.listen('channel', () => {})
    }
    expectTypeOf(app.pgPool).toEqualTypeOf<PgPoolView>()
    expectTypeOf(app.pgPool.stats()).toEqualTypeOf<PoolStats>()
    expectTypeOf(app.pgPool.stats().waiting).toBeNumber()
    app.pgPool.on('release', (heldMs, route) => {
      expectTypeOf(heldMs).toBeNumber()
      expectTypeOf(route).toBeString()
    })
    app.pgPool.on('transaction', (outcome) => {
      expectTypeOf(outcome).toEqualTypeOf<'commit' | 'rollback' | 'commit_failed' | 'commit_unknown'>()
    })
    expectTypeOf(app.pgPool.wouldRefuse()).toBeBoolean()
  })

  test('onLease receives the request and the request’s query API', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, {
      onLease: async (request, db) => {
        expectTypeOf(request).toEqualTypeOf<FastifyRequest>()
        expectTypeOf(db).toEqualTypeOf<RequestDb>()
        await db`select set_config('app.tenant', ${String(request.headers['x-tenant'])}, true)`
      },
    })
    // @ts-expect-error onLease is a function
    await app.register(pgPoolCore, { onLease: 'tenant' })
  })

  test('route config.db', () => {
    const app = Fastify()
    app.get('/tx', { config: { db: { transaction: { isolation: 'repeatable read', readOnly: true } } } }, async () => 1)
    app.get('/none', { config: { db: false } }, async () => 1)
    app.get('/shared', { config: { db: { pipeline: true } } }, async () => 1)
    // Fastify infers route config generics loosely; the augmented interface itself is exact.
    const bad: import('fastify').FastifyContextConfig = {
      // @ts-expect-error transaction takes a boolean or options
      db: { transaction: 'yes' },
    }
    void bad
    const badPipeline: import('fastify').FastifyContextConfig = {
      // @ts-expect-error pipeline takes a boolean
      db: { pipeline: 1 },
    }
    void badPipeline
    expectTypeOf<RouteDbConfig>().toEqualTypeOf<
      | false
      | {
          transaction: boolean | import('@fastify-pg-pool/core').RouteTransactionOptions
          pipeline?: false
          instance?: string
          readOnly?: boolean
        }
      | { pipeline: boolean; transaction?: false; instance?: string; readOnly?: boolean }
      | { instance: string; transaction?: false; pipeline?: false; readOnly?: boolean }
      | { readOnly: boolean; transaction?: false; pipeline?: false; instance?: string }
    >()
  })

  test('options are checked', async () => {
    const app = Fastify()
    // @ts-expect-error max is a number
    await app.register(pgPoolCore, { pool: { max: '5' } })
    // @ts-expect-error unknown option
    await app.register(pgPoolCore, { pool: { maxConnections: 5 } })
    // postgres.js options the pool sets itself: refused at register, and by the type (round nine)
    // @ts-expect-error idle_timeout is pool.idleTimeout
    await app.register(pgPoolCore, { connection: { host: 'db', idle_timeout: 5 } })
    // @ts-expect-error max_lifetime is pool.maxLifetime
    await app.register(pgPoolCore, { connection: { host: 'db', max_lifetime: 5 } })
    // @ts-expect-error debug is the pool's
    await app.register(pgPoolCore, { connection: { host: 'db', debug: true } })
    await app.register(pgPoolCore, {
      connection: { host: 'db', connect_timeout: 5 },
      pool: { maxPreparedStatements: 0 },
    })
  })
})

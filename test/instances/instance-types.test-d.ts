import type { LeaseDb, PgPoolView, PoolDb, RequestDb } from '@fastify-pg-pool/core'
import pgPoolCore, { routeInstance } from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { describe, expectTypeOf, test } from 'vitest'

// Public types around named instances and the migration from @fastify/postgres: held (every
// line marked as an expected error below is one today, each other line compiles).

declare module '@fastify-pg-pool/core' {
  interface PgPoolInstances {
    reporting: true
  }
}

const handler = async () => null

describe('named instances: types', () => {
  test('declared names are exact; others are possibly undefined; entries are read-only', async () => {
    const app = Fastify()
    await app.register(pgPool, { connection: 'postgres://localhost/app' })
    await app.register(pgPool, {
      name: 'reporting',
      connection: 'postgres://localhost/reporting',
      health: {},
      metrics: {},
      backpressure: false,
      otel: false,
    })
    expectTypeOf(app.dbs.reporting).toEqualTypeOf<PoolDb>()
    expectTypeOf(app.dbs.elsewhere).toEqualTypeOf<PoolDb | undefined>()
    expectTypeOf(app.pgPools.get('reporting')).toEqualTypeOf<PgPoolView | undefined>()
    expectTypeOf(app.pgPools.all()).toEqualTypeOf<readonly PgPoolView[]>()
    expectTypeOf(app.pgPools.onClosed).parameters.toEqualTypeOf<[() => void]>()
    expectTypeOf(app.pgPools.onClosed(() => {})).toEqualTypeOf<() => void>()
    // @ts-expect-error app.dbs entries cannot be reassigned
    app.dbs.reporting = app.db
    app.get('/r', async (request) => {
      expectTypeOf(request.dbs.reporting).toEqualTypeOf<RequestDb>()
      expectTypeOf(request.dbs.reporting.replica).toEqualTypeOf<LeaseDb | undefined>()
      // @ts-expect-error an undeclared name may be undefined: a typo does not compile as a query
      await request.dbs.reportng`select 1`
      // @ts-expect-error request.dbs entries cannot be reassigned
      request.dbs.reporting = request.db
      return null
    })
    expectTypeOf(app.dbs.reporting.listen).toBeFunction()
    expectTypeOf(app.dbs.reporting.lease()).resolves.toHaveProperty('release')
  })

  test('route config with an instance: valid forms compile', () => {
    const app = Fastify()
    app.post('/a', { config: { db: { transaction: true, instance: 'reporting' } } }, handler)
    app.post('/b', { config: { db: { transaction: { isolation: 'serializable' }, instance: 'reporting' } } }, handler)
    app.get('/c', { config: { db: { instance: 'reporting' } } }, handler)
    app.get('/d', { config: { db: { instance: 'reporting', readOnly: true } } }, handler)
    app.get('/e', { config: { db: { pipeline: true, instance: 'reporting' } } }, handler)
    expectTypeOf(routeInstance({ db: { instance: 'reporting' } })).toEqualTypeOf<string | undefined>()
  })

  test('route config: what a port from { pg: { transact } } gets wrong does not compile', () => {
    const app = Fastify()
    // @ts-expect-error transact: 'foo' becomes { transaction: true, instance: 'foo' }, not transaction: 'foo'
    app.post('/a', { config: { db: { transaction: 'reporting' } } }, handler)
    // @ts-expect-error instance is a name
    app.get('/b', { config: { db: { instance: 5 } } }, handler)
    // @ts-expect-error instnace is not a config.db option
    app.get('/c', { config: { db: { instnace: 'reporting' } } }, handler)
    // @ts-expect-error config.db is false or an object
    app.get('/d', { config: { db: true } }, handler)
    // @ts-expect-error an empty object asks for nothing
    app.get('/e', { config: { db: {} } }, handler)
  })

  test('register options: wrong types and pg option objects do not compile', async () => {
    const app = Fastify()
    // @ts-expect-error name is a string
    await app.register(pgPoolCore, { name: 5 })
    // @ts-expect-error requireInstances is a list of names
    await app.register(pgPoolHealth, { requireInstances: 'reporting' })
    // @ts-expect-error pg's connectionString inside connection is not a postgres.js option
    await app.register(pgPool, { connection: { connectionString: 'postgres://localhost/app' } })
    // @ts-expect-error pg's idleTimeoutMillis inside connection is not a postgres.js option
    await app.register(pgPool, { connection: { host: 'db', idleTimeoutMillis: 1000 } })
    // @ts-expect-error nor at the top level
    await app.register(pgPool, { idleTimeoutMillis: 1000 })
    // @ts-expect-error pool.max is a number
    await app.register(pgPool, { name: 'reporting', pool: { max: '5' } })
    // @ts-expect-error otel.traceContext is a boolean
    await app.register(pgPool, { otel: { traceContext: 'yes' } })
    await app.register(pgPool, { connection: { host: 'db', user: 'app', username: 'app', password: async () => 'x' } })
  })
})

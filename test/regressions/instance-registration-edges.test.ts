import { Writable } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Defects found by probing named instances, the migration from @fastify/postgres and the
// documented contract around them. Each test failed before the fix.

let main: TestDatabase
let other: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  main = await createTestDatabase()
  other = await createTestDatabase()
  for (const [db, name] of [
    [main, 'main'],
    [other, 'other'],
  ] as const) {
    await db.sql`create table which (name text)`
    await db.sql`insert into which values (${name})`
  }
})
afterEach(async () => {
  await app?.close().catch(() => {})
  app = undefined
})
afterAll(async () => {
  await main.drop()
  await other.drop()
})

const failure = (promise: PromiseLike<unknown>) =>
  Promise.resolve(promise).then(
    () => undefined,
    (error: Error & { code?: string }) => error,
  )

describe('the umbrella in encapsulated plugins', () => {
  // packages/fastify-pg-pool/README.md "A second database": health, metrics and otel of the
  // first registration serve every instance, "a later registration inside an encapsulated plugin
  // as much as one beside it". The core handles a child that loads first
  // (test/regressions/child-first-instance.test.ts); the umbrella registers health and metrics a
  // second time and the app does not start.
  test('a named umbrella registration in a plugin that loads before the default one: the app starts, one /health and /metrics cover both', async () => {
    app = Fastify()
    app.register(async (child) => {
      await child.register(pgPool, { name: 'other', connection: other.url, pool: { max: 1 } })
    })
    app.register(pgPool, { connection: main.url, pool: { max: 1 } })
    const error = await failure(app.ready())
    expect(error?.code, error?.message).toBeUndefined() // now: FST_ERR_DUPLICATED_ROUTE for GET /metrics
    const health = await app.inject('/health')
    expect(health.statusCode).toBe(200)
    expect(
      health
        .json()
        .checks['postgres:responseTime'].map((check: { componentId: string }) => check.componentId)
        .sort(),
    ).toEqual(['other', 'primary'])
    const metrics = (await app.inject('/metrics')).body
    expect(metrics).toMatch(/pg_pool_connections_max\{pool="primary"\} 1/)
    expect(metrics).toMatch(/pg_pool_connections_max\{pool="other"\} 1/)
  })

  test('default and named umbrella registrations in two sibling plugins: the app starts', async () => {
    app = Fastify()
    app.register(async (child) => {
      await child.register(pgPool, { connection: main.url, pool: { max: 1 } })
    })
    app.register(async (child) => {
      await child.register(pgPool, { name: 'other', connection: other.url, pool: { max: 1 } })
    })
    const error = await failure(app.ready())
    expect(error?.code, error?.message).toBeUndefined() // now: FST_ERR_DUPLICATED_ROUTE for GET /metrics
    expect((await app.inject('/health/ready')).statusCode).toBe(200)
  })
})

describe('porting from @fastify/postgres', () => {
  // docs/migrating-from-fastify-postgres.md maps pg's `connectionString` to `connection`; pg's
  // own option object holds it, so `connection: { connectionString }` is the natural port. The
  // key is passed to postgres.js, which ignores it: the pool silently connects to PGHOST /
  // localhost:5432 as the OS user, to another database (observed: database "root" on the local
  // server). Expected: FST_PG_POOL_INVALID_OPTION at register (as at the top level), or at least
  // the database of the URL.
  test('connection: { connectionString } is refused, never a silent connection to another database', async () => {
    app = Fastify()
    const current = app
    const error = await failure(
      current.register(pgPoolCore, { connection: { connectionString: main.url } as never }).then(() => current.ready()),
    )
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toContain('connectionString')
    expect(error?.message).toContain('connection (the URL itself, not an object)')
  })

  // The guide: "A pg name given at the top level is refused at register with
  // FST_PG_POOL_INVALID_OPTION, naming the option meant", and its table maps
  // `maxLifetimeSeconds` to `pool.maxLifetime`. The error lists the top-level keys instead.
  test('maxLifetimeSeconds at the top level names pool.maxLifetime', async () => {
    app = Fastify()
    const error = await failure(app.register(pgPool, { connection: main.url, maxLifetimeSeconds: 60 } as never))
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toContain('pool.maxLifetime')
  })
})

describe('named instances', () => {
  // packages/core/README.md: onLease is "Not on pipelined routes"; a pipelined route of an
  // instance with onLease is refused with FST_PG_POOL_INVALID_OPTION (route-settings.ts). When
  // the route is declared before the named instance is registered, the check sees no onLease,
  // the route is accepted, and plugin.ts newLease skips onLease for pipelined leases: the
  // handler runs without the tenant context onLease sets (row-level security bypassed).
  test('a pipelined route of a named instance with onLease, declared before that instance: never served without onLease', async () => {
    app = Fastify()
    await app.register(pgPoolCore, { connection: main.url, pool: { max: 1 } })
    app.get('/tenant', { config: { db: { pipeline: true, instance: 'tenant' } } }, async (request) => {
      const [row] = await request.db`select current_setting('app.tenant', true) as tenant`
      return row
    })
    const registered = await failure(
      app.register(pgPoolCore, {
        name: 'tenant',
        connection: other.url,
        pool: { max: 1 },
        onLease: async (request, db) => {
          await db`select set_config('app.tenant', ${String(request.headers['x-tenant'])}, true)`
        },
      }),
    )
    // Refused when the instance registers, naming the route (before the fix: 200 {"tenant":null}).
    expect(registered?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(registered?.message).toContain('/tenant')
    // Nothing of the refused instance stays open (its backend leaves pg_stat_activity once the
    // server has seen the connection close: waited for, as it can lag under load).
    expect(await waitFor(async () => (await other.countConnections('fastify-pg-pool')) === 0)).toBe(true)
  })

  // Core README: at startup "the pool compares max × instances with the server's
  // max_connections minus reserved slots, warns with the numbers when it does not fit";
  // docs/pgbouncer-and-sizing.md: everything the app opens must fit. Two instances of one app on
  // one server are each compared alone: 2 × 60 % of the slots passes silently, and health's
  // postgres:budget says pass for both.
  test('two instances on one server that together exceed its connection slots: warned, budget not pass', async () => {
    const [settings] = await main.sql<{ slots: number }[]>`
      select current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
        - coalesce(current_setting('reserved_connections', true), '0')::int as slots`
    const max = Math.floor((settings?.slots ?? 0) * 0.6) // each fits, the two together do not
    const warnings: string[] = []
    const stream = new Writable({
      write(chunk, _encoding, callback) {
        for (const line of String(chunk).split('\n')) {
          if (line && JSON.parse(line).level >= 40) warnings.push(JSON.parse(line).msg)
        }
        callback()
      },
    })
    app = Fastify({ logger: { level: 'warn', stream } })
    await app.register(pgPoolCore, { connection: main.url, pool: { max } })
    await app.register(pgPoolCore, { name: 'other', connection: other.url, pool: { max } })
    await app.register(pgPoolHealth)
    await app.ready()
    const statuses = (await app.inject('/health'))
      .json()
      .checks['postgres:budget'].map((check: { status: string }) => check.status)
    expect(statuses).toHaveLength(2)
    expect(
      statuses.every((status: string) => status === 'pass'),
      JSON.stringify(statuses),
    ).toBe(false)
    expect(
      warnings.filter((message) => /connections/.test(message)),
      'a budget warning',
    ).not.toEqual([])
    // Each pool's check counts both, and names the other; the warning too.
    const checks = (await app.inject('/health')).json().checks['postgres:budget'] as {
      componentId: string
      observedValue: number
      pools: string[]
    }[]
    expect(
      checks
        .map(({ componentId, observedValue, pools }) => ({ componentId, observedValue, pools }))
        .sort((a, b) => a.componentId.localeCompare(b.componentId)),
    ).toEqual([
      { componentId: 'other', observedValue: 2 * max, pools: ['other', 'primary'] },
      { componentId: 'primary', observedValue: 2 * max, pools: ['primary', 'other'] },
    ])
    expect(warnings.find((message) => /connections/.test(message))).toContain(
      `max ${max} x 1 instances = ${max} connections, ${2 * max} with the app's other pools on this server (primary)`,
    )
    expect(app.pgPool.budget()).toMatchObject({ demand: max, serverDemand: 2 * max, exceeded: true })
  })

  // packages/health/README.md: requireInstances names "Named instances whose primary fails
  // readiness"; invalid options fail with FST_PG_POOL_INVALID_OPTION. A name that matches no
  // instance (a typo) is accepted, and the instance meant never fails readiness: here 'orders'
  // is unreachable and /health/ready answers 200 "warn".
  test('requireInstances naming no registered instance is refused, never silently ignored', async () => {
    app = Fastify()
    await app.register(pgPoolCore, { connection: main.url, pool: { max: 1 } })
    await app.register(pgPoolCore, {
      name: 'orders',
      connection: 'postgres://nobody@127.0.0.1:1/orders',
      pool: { max: 1, lazy: true, connectTimeout: 500 },
    })
    const current = app
    const error = await failure(
      current.register(pgPoolHealth, { requireInstances: ['ordrs'] }).then(() => current.ready()),
    )
    // Before the fix: accepted, and /health/ready answered 200 {"status":"warn"}.
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toContain('"ordrs"')
    expect(error?.message).toContain('did you mean "orders"?')
  })
})

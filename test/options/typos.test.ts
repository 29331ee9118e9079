import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolHealth from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify, { type FastifyInstance, type FastifyPluginAsync } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Issue 17, item 8: a misspelled option at any level, in any package, is refused at register
// with FST_PG_POOL_INVALID_OPTION naming the full key and the closest valid name. On main
// before the option toolkit, every top-level typo below registered without a word.

let db: TestDatabase
const apps: FastifyInstance[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(() => db.drop())

/** The error `register` fails with, or undefined when it succeeds. */
async function registerError(
  app: FastifyInstance,
  plugin: FastifyPluginAsync<never>,
  options: unknown,
): Promise<(Error & { code?: string }) | undefined> {
  apps.push(app)
  return app
    .register(plugin, options as never)
    .ready()
    .then(
      () => undefined,
      (error: Error & { code?: string }) => error,
    )
}

const umbrella = pgPool as unknown as FastifyPluginAsync<never>

describe('fastify-pg-pool: its keys and the core’s, checked together', () => {
  test.each([
    ['helth', 'health', { helth: false }],
    ['backpresure', 'backpressure', { backpresure: false }],
    ['metric', 'metrics', { metric: {} }],
    ['Pool', 'pool', { Pool: { max: 2 } }],
    ['onlease', 'onLease', { onlease: async () => {} }],
    ['connectionString', 'connection', { connectionString: 'postgres://app:S3cret@db/app' }],
    ['poolSize', 'pool.max', { poolSize: 5 }],
  ])('%s → did you mean %s?', async (key, meant, typo) => {
    const error = await registerError(Fastify(), umbrella, { connection: db.url, ...typo })
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toBe(`Invalid option ${key}: unknown option; did you mean ${meant}?`)
  })

  test('a misspelled onLease would have switched off a tenant hook: the pool is never opened', async () => {
    const app = Fastify()
    const error = await registerError(app, umbrella, {
      connection: db.url,
      onlease: async () => {},
      health: false,
      metrics: false,
      backpressure: false,
    })
    expect(error?.message).toMatch(/^Invalid option onlease: .*did you mean onLease\?$/)
    expect(app.hasDecorator('pgPool')).toBe(false)
  })

  test.each([
    ['health.pingTimeot', 'pingTimeout', { health: { pingTimeot: 5 } }],
    ['metrics.bukets', 'buckets', { metrics: { bukets: {} } }],
    ['metrics.buckets.aquire', 'acquire', { metrics: { buckets: { aquire: [1] } } }],
    ['backpressure.targt', 'target', { backpressure: { targt: 5 } }],
    ['backpressure.retryStorm.factr', 'factor', { backpressure: { retryStorm: { factr: 2 } } }],
    ['backpressure.process.maxRSSBytes', 'maxRssBytes', { backpressure: { process: { maxRSSBytes: 1 } } }],
  ])('nested: %s → did you mean %s?', async (key, meant, typo) => {
    const error = await registerError(Fastify(), umbrella, { connection: db.url, pool: { lazy: true }, ...typo })
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toBe(`Invalid option ${key}: unknown option; did you mean ${meant}?`)
  })

  test('a part is options or false', async () => {
    const error = await registerError(Fastify(), umbrella, { connection: db.url, health: true })
    expect(error?.message).toBe('Invalid option health: expected an object or false, got true')
  })

  test("valid options register and serve, with Fastify's register options accepted", async () => {
    const app = Fastify()
    const error = await registerError(app, umbrella, {
      connection: db.url,
      pool: { max: 2, pgbouncer: db.viaBouncer },
      onLease: async () => {},
      health: { pingTimeout: 2_000, details: 'public' },
      metrics: { namePrefix: 'typos_', maxRoutes: 10, buckets: { acquire: [0.01, 0.1] } },
      backpressure: { target: 50, minRetryAfter: 2, maxRetryAfter: 10, retryStorm: { factor: 20 }, process: false },
      logLevel: 'info',
      logSerializers: {},
    })
    expect(error).toBeUndefined()
    expect((await app.inject('/health')).json()).toEqual({ status: 'pass' })
    expect((await app.inject('/metrics')).body).toContain('typos_acquires_total')
  })
})

describe('each package on its own, at every level', () => {
  test.each([
    ['health.livePth', 'livePath', pgPoolHealth, { livePth: '/live' }],
    ['health.requireDatabse', 'requireDatabase', pgPoolHealth, { requireDatabse: 'always' }],
    ['metrics.maxRoute', 'maxRoutes', pgPoolMetrics, { maxRoute: 5 }],
    ['metrics.endpoint', 'path', pgPoolMetrics, { endpoint: '/m' }],
    ['metrics.buckets.htp', 'http', pgPoolMetrics, { buckets: { htp: [1] } }],
    ['backpressure.maxdelay', 'maxDelay', pgPoolBackpressure, { maxdelay: 80 }],
    ['backpressure.retryAfterMax', 'maxRetryAfter', pgPoolBackpressure, { retryAfterMax: 9 }],
    ['backpressure.retryStorm.dely', 'delay', pgPoolBackpressure, { retryStorm: { dely: 5 } }],
    [
      'backpressure.process.sampleIntervall',
      'sampleInterval',
      pgPoolBackpressure,
      { process: { sampleIntervall: 100 } },
    ],
  ])('%s → did you mean %s?', async (key, meant, plugin, typo) => {
    const { app } = await coreApp(db.url, { max: 1, lazy: true })
    const error = await registerError(app, plugin as FastifyPluginAsync<never>, typo)
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toBe(`Invalid option ${key}: unknown option; did you mean ${meant}?`)
  })

  test('valid options register; Fastify’s register options are not typos', async () => {
    const { app } = await coreApp(db.url, { max: 1 })
    apps.push(app)
    await app.register(pgPoolMetrics, { namePrefix: 'each_', path: '/m', logLevel: 'warn', logSerializers: {} })
    await app.register(pgPoolHealth, { livePath: '/live', readyPath: false, healthPath: '/hc', logLevel: 'warn' })
    await app.register(pgPoolBackpressure, {
      maxDelay: 80,
      retryStorm: false,
      process: { sampleInterval: 100 },
      prefix: '/ignored',
      logLevel: 'warn',
    } as never)
    await app.ready()
    expect((await app.inject('/live')).statusCode).toBe(200)
    expect((await app.inject('/hc')).statusCode).toBe(200)
    expect((await app.inject('/m')).body).toContain('each_waiters{pool="primary"} 0')
  })
})

describe('route config.db', () => {
  test('a typo beside a valid key, which TypeScript cannot see, is refused when the route is added', async () => {
    const { app } = await coreApp(db.url, { max: 1, lazy: true })
    apps.push(app)
    const config = { db: { transaction: true, pipline: true } }
    expect(() => app.get('/x', { config }, async () => null)).toThrow(
      expect.objectContaining({
        code: 'FST_PG_POOL_INVALID_OPTION',
        message: expect.stringContaining('Invalid option config.db.pipline of /x: unknown option'),
      }),
    )
  })
})

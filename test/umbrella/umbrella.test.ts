import Fastify, { type FastifyInstance } from 'fastify'
import pgPoolDefault, {
  errors,
  type PgPoolOptions,
  pgPool,
  pgPoolBackpressure,
  pgPoolHealth,
  pgPoolMetrics,
} from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

/** The umbrella on this file's database, with one slow route that counts its handler runs. */
async function umbrellaApp(options: Omit<PgPoolOptions, 'connection'> = {}) {
  const instance = Fastify()
  const applicationName = uniqueName()
  await instance.register(pgPool, {
    ...options,
    connection: db.url,
    pool: { max: 1, maxWaiting: 1, applicationName, pgbouncer: db.viaBouncer, ...options.pool },
  })
  const handled = { count: 0 }
  instance.get('/slow', async (request) => {
    handled.count++
    await request.db`select pg_sleep(0.3)`
    return { ok: true }
  })
  app = instance
  return { app: instance, handled }
}

/** Fills the pool (one lease) and its queue (one waiter) with slow requests. */
async function saturate(instance: FastifyInstance) {
  // inject() runs when awaited or then()-ed: start both now.
  const first = instance.inject('/slow').then((reply) => reply)
  expect(await waitFor(() => instance.pgPool.stats().leased === 1)).toBe(true)
  const second = instance.inject('/slow').then((reply) => reply)
  expect(await waitFor(() => instance.pgPool.stats().waiting === 1)).toBe(true)
  return { done: Promise.all([first, second]) }
}

describe('fastify-pg-pool (umbrella)', () => {
  test('exports the plugin as default and as pgPool, the parts, and the core API', () => {
    expect(pgPoolDefault).toBe(pgPool)
    expect(typeof pgPool).toBe('function')
    // The parts, for apps that register them one by one, and the core's error constructors.
    for (const part of [pgPoolHealth, pgPoolMetrics, pgPoolBackpressure]) expect(typeof part).toBe('function')
    expect(new errors.FST_PG_POOL_QUEUE_FULL(5).statusCode).toBe(503)
  })

  test('one registration wires the pool, /health, /metrics and admission control', async () => {
    const { app, handled } = await umbrellaApp()
    const live = await app.inject('/health/live')
    expect(live.statusCode).toBe(200)
    const ready = await app.inject('/health')
    expect(ready.statusCode).toBe(200)
    expect(ready.headers['content-type']).toContain('application/health+json')
    expect(ready.json().status).toBe('pass')

    const settled = await saturate(app)
    const refused = await app.inject('/slow')
    // Refused at the door by admission control: the handler never ran for it.
    expect(refused.statusCode).toBe(503)
    expect(refused.json().code).toBe('FST_PG_POOL_QUEUE_FULL')
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    // Probes and scrapes are never refused while the pool is saturated.
    expect((await app.inject('/health/live')).statusCode).toBe(200)
    const metrics = await app.inject('/metrics')
    expect(metrics.statusCode).toBe(200)
    expect(metrics.body).toMatch(/^pg_pool_requests_shed_total\{pool="primary",reason="queue_full"\} 1$/m)
    expect(metrics.body).toMatch(/^pg_pool_waiters\{pool="primary"\} 1$/m)
    for (const reply of await settled.done) expect(reply.statusCode).toBe(200)
    expect(handled.count).toBe(2)
  })

  test('health: false, metrics: false and backpressure: false leave those parts out', async () => {
    const { app, handled } = await umbrellaApp({ health: false, metrics: false, backpressure: false })
    expect((await app.inject('/health')).statusCode).toBe(404)
    expect((await app.inject('/health/live')).statusCode).toBe(404)
    expect((await app.inject('/metrics')).statusCode).toBe(404)
    const settled = await saturate(app)
    // Without admission control the request reaches its handler and the pool's own queue cap
    // refuses its lease.
    const refused = await app.inject('/slow')
    expect(refused.statusCode).toBe(503)
    expect(refused.json().code).toBe('FST_PG_POOL_QUEUE_FULL')
    for (const reply of await settled.done) expect(reply.statusCode).toBe(200)
    expect(handled.count).toBe(3)
  })

  test('options reach each package: a bad one fails at register with a coded error', async () => {
    for (const bad of [
      { health: { livePath: 5 } },
      { metrics: { namePrefix: 'not a prefix' } },
      { backpressure: { target: -1 } },
      { pool: { max: 0 } },
    ]) {
      const instance = Fastify()
      await expect(
        instance.register(pgPool, { connection: db.url, ...(bad as unknown as PgPoolOptions) }).ready(),
      ).rejects.toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
      await instance.close()
    }
  })
})

import pgPoolHealth from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Fastify's `prefix` register option: the health and metrics plugins are fastify-plugins, so
// Fastify does not prefix their routes; they prepend it themselves. On main before this, health
// accepted `prefix` and served /health at the root anyway.

let db: TestDatabase
const apps: FastifyInstance[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(() => db.drop())

async function statuses(app: FastifyInstance, paths: string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const path of paths) out[path] = (await app.inject(path)).statusCode
  return out
}

describe('prefix', () => {
  test('health serves its three routes under the prefix, and nothing at the root', async () => {
    const { app } = await coreApp(db.url, { max: 1 })
    apps.push(app)
    await app.register(pgPoolHealth, { prefix: '/internal/' })
    expect(
      await statuses(app, [
        '/internal/health/live',
        '/internal/health/ready',
        '/internal/health',
        '/health/live',
        '/health/ready',
        '/health',
      ]),
    ).toEqual({
      '/internal/health/live': 200,
      '/internal/health/ready': 200,
      '/internal/health': 200,
      '/health/live': 404,
      '/health/ready': 404,
      '/health': 404,
    })
  })

  test('health: the prefix applies to custom paths; inside an encapsulated prefix both apply', async () => {
    const { app } = await coreApp(db.url, { max: 1 })
    apps.push(app)
    await app.register(
      async (child) => {
        await child.register(pgPoolHealth, { prefix: '/ops', livePath: '/alive', readyPath: false, healthPath: '/hc' })
      },
      { prefix: '/v1' },
    )
    expect(await statuses(app, ['/v1/ops/alive', '/v1/ops/hc', '/v1/ops/health/ready', '/ops/alive'])).toEqual({
      '/v1/ops/alive': 200,
      '/v1/ops/hc': 200,
      '/v1/ops/health/ready': 404,
      '/ops/alive': 404,
    })
  })

  test('metrics serves its route under the prefix', async () => {
    const { app } = await coreApp(db.url, { max: 1 })
    apps.push(app)
    await app.register(pgPoolMetrics, { prefix: '/internal' })
    const scrape = await app.inject('/internal/metrics')
    expect(scrape.statusCode).toBe(200)
    expect(scrape.body).toContain('pg_pool_waiters{pool="primary"} 0')
    expect((await app.inject('/metrics')).statusCode).toBe(404)
  })

  test('given to the umbrella, it reaches the health and metrics routes; a part’s own prefix wins', async () => {
    const app = Fastify()
    apps.push(app)
    await app.register(pgPool, {
      connection: db.url,
      pool: { max: 1, pgbouncer: db.viaBouncer },
      metrics: { prefix: '/scrape' },
      prefix: '/internal',
    } as never)
    expect(await statuses(app, ['/internal/health/live', '/internal/health', '/scrape/metrics', '/health'])).toEqual({
      '/internal/health/live': 200,
      '/internal/health': 200,
      '/scrape/metrics': 200,
      '/health': 404,
    })
  })

  test.each([
    [pgPoolHealth, 'health', 'internal', 'Invalid option health.prefix: expected a route prefix starting with /'],
    [pgPoolMetrics, 'metrics', 'shop_', 'Invalid option metrics.prefix: expected a route prefix starting with /'],
    [pgPoolHealth, 'health', 5, 'Invalid option health.prefix: expected a route prefix starting with /, got 5'],
  ])('%$: %s with prefix %j is refused', async (plugin, _name, prefix, message) => {
    const { app } = await coreApp(db.url, { max: 1, lazy: true })
    apps.push(app)
    await expect(app.register(plugin as typeof pgPoolHealth, { prefix } as never).ready()).rejects.toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining(message),
    })
  })

  test('metrics: the old meaning of prefix (metric names) is pointed at namePrefix', async () => {
    const { app } = await coreApp(db.url, { max: 1, lazy: true })
    apps.push(app)
    await expect(app.register(pgPoolMetrics, { prefix: 'shop_' }).ready()).rejects.toThrow(
      'Invalid option metrics.prefix: expected a route prefix starting with /, got "shop_" (metric names: namePrefix)',
    )
  })
})

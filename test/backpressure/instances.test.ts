import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../support/database.js'

// Admission control judges a route by the pool its request.db uses. It once judged every route by
// the default instance's pool: a request to an idle named instance was refused (and counted on
// `primary`) while the default pool was saturated, and a saturated named pool was never seen.

declare module '@fastify-pg-pool/core' {
  interface PgPoolInstances {
    reporting: true
  }
}

let main: TestDatabase
let reporting: TestDatabase
let app: FastifyInstance | undefined
let release: () => void = () => {}
beforeAll(async () => {
  main = await createTestDatabase()
  reporting = await createTestDatabase()
})
afterEach(async () => {
  release()
  await app?.close()
  app = undefined
})
afterAll(async () => {
  await main?.drop()
  await reporting?.drop()
})

/**
 * The default instance, metrics and admission control, then the `reporting` instance (registered
 * after admission control: found when its routes are first judged). `/busy` and `/report/busy`
 * hold their connection until `release()`.
 */
async function start(primaryPool: { max: number; maxWaiting: number }, reportingPool: typeof primaryPool) {
  const gate = new Promise<void>((resolve) => {
    release = resolve
  })
  const instance = Fastify()
  app = instance
  const pool = (db: TestDatabase, sizing: typeof primaryPool) => ({
    ...sizing,
    acquireTimeout: 10_000,
    pgbouncer: db.viaBouncer,
    applicationName: uniqueName(),
  })
  await instance.register(pgPoolCore, { connection: main.url, pool: pool(main, primaryPool) })
  await instance.register(pgPoolMetrics)
  await instance.register(pgPoolBackpressure, { process: false })
  await instance.register(pgPoolCore, {
    name: 'reporting',
    connection: reporting.url,
    pool: pool(reporting, reportingPool),
  })
  const busy = async (request: FastifyRequest) => {
    await request.db`select 1`
    await gate
    return { ok: true }
  }
  instance.get('/busy', busy)
  instance.get('/report/busy', { config: { db: { instance: 'reporting' } } }, busy)
  instance.get('/default', async (request) => {
    const [row] = await request.db`select 1 as n`
    return row
  })
  instance.get('/report', { config: { db: { instance: 'reporting' } } }, async (request) => {
    const [row] = await request.db`select 42 as n`
    return row
  })
  await instance.ready()
  return instance
}

async function shed(instance: FastifyInstance, pool: string): Promise<number> {
  const scrape = parseExposition((await instance.inject('/metrics')).body)
  return scrape.value('pg_pool_requests_shed_total', { pool, reason: 'queue_full' })
}

describe('admission control with named instances', () => {
  test("a route on an idle named instance is admitted while the default pool's queue is at its cap", async () => {
    const instance = await start({ max: 1, maxWaiting: 1 }, { max: 5, maxWaiting: 5 })
    const busy = [instance.inject('/busy'), instance.inject('/busy')]
    await waitUntil(() => {
      const stats = instance.pgPool.stats()
      return stats.leased === 1 && stats.waiting === 1
    }, 'the default pool saturated')
    // The default pool's routes are refused...
    expect((await instance.inject('/default')).json()).toMatchObject({ code: 'FST_PG_POOL_QUEUE_FULL' })
    // ...not the idle instance's.
    const report = await instance.inject('/report')
    expect({ status: report.statusCode, body: report.json() }).toEqual({ status: 200, body: { n: 42 } })
    expect(await shed(instance, 'primary')).toBe(1)
    expect(await shed(instance, 'reporting')).toBe(0)
    release()
    expect((await Promise.all(busy)).map((res) => res.statusCode)).toEqual([200, 200])
  })

  test("a saturated named pool refuses its own routes, counted on its pool, with its cap in the body; the default pool's routes are admitted", async () => {
    const instance = await start({ max: 5, maxWaiting: 7 }, { max: 1, maxWaiting: 1 })
    const busy = [instance.inject('/report/busy'), instance.inject('/report/busy')]
    const reportingPool = instance.pgPools.get('reporting')
    await waitUntil(() => {
      const stats = reportingPool?.stats()
      return stats?.leased === 1 && stats.waiting === 1
    }, 'the reporting pool saturated')

    const refused = await instance.inject('/report')
    expect(refused.statusCode).toBe(503)
    expect(refused.headers['retry-after']).toMatch(/^[1-9][0-9]*$/)
    expect(refused.json()).toEqual({
      statusCode: 503,
      code: 'FST_PG_POOL_QUEUE_FULL',
      error: 'Service Unavailable',
      message: 'Too many requests are waiting for a database connection (maxWaiting 1)',
    })
    expect((await instance.inject('/default')).json()).toEqual({ n: 1 })
    expect(await shed(instance, 'reporting')).toBe(1)
    expect(await shed(instance, 'primary')).toBe(0)
    release()
    expect((await Promise.all(busy)).map((res) => res.statusCode)).toEqual([200, 200])
  })

  test('a route naming no registered instance is admitted: the core answers it with its own coded error', async () => {
    app = Fastify()
    await app.register(pgPoolCore, { connection: main.url, pool: { pgbouncer: main.viaBouncer } })
    await app.register(pgPoolBackpressure, { process: false })
    app.get('/nowhere', { config: { db: { instance: 'nowhere' as 'reporting' } } }, async (request) => {
      await request.db`select 1`
      return { ok: true }
    })
    const res = await app.inject('/nowhere')
    expect(res.json()).toMatchObject({ code: 'FST_PG_POOL_UNKNOWN_INSTANCE' })
  })
})

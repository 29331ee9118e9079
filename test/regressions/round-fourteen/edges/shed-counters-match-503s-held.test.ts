import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../../support/database.js'

/**
 * A closed-loop overload with routes of every priority: every 503 the clients saw is a coded
 * body with an integer Retry-After within minRetryAfter..maxRetryAfter, and /metrics counts them
 * by reason: admission's refusals under pg_pool_requests_shed_total, the core's own later
 * refusals under pg_pool_acquires_total (rejected, timeout). `high` is never refused at the door
 * below the cap; nothing is refused once the load stops.
 */

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

function series(metrics: string, name: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of metrics.split('\n')) {
    const m = new RegExp(`^${name}\\{pool="primary",(?:reason|result)="([a-z_]+)"\\} (\\d+)`).exec(line)
    if (m) out.set(m[1] as string, Number(m[2]))
  }
  return out
}

test('every 503 is coded, bounded and counted by reason', async () => {
  const instance = Fastify()
  app = instance
  const minRetryAfter = 2
  const maxRetryAfter = 7
  await instance.register(pgPool, {
    connection: db.url,
    pool: { max: 2, maxWaiting: 8, applicationName: uniqueName(), acquireTimeout: 150 },
    backpressure: { minRetryAfter, maxRetryAfter, retryStorm: false, process: false },
  })
  const hold = async (request: { db: (s: TemplateStringsArray) => Promise<unknown> }) => {
    await request.db`select pg_sleep(0.02)`
    return { ok: true }
  }
  instance.get('/normal', hold)
  instance.get('/low', { config: { backpressure: { priority: 'low' } } }, hold)
  instance.get('/high', { config: { backpressure: { priority: 'high' } } }, hold)
  instance.get('/nodb', { config: { db: false } }, async () => ({ ok: true }))
  await instance.ready()
  // Warm: connections open, hold times known.
  for (let i = 0; i < 10; i++) await instance.inject('/normal')
  const before = await instance.inject('/metrics')
  const shedBefore = series(before.body, 'pg_pool_requests_shed_total')
  const acqBefore = series(before.body, 'pg_pool_acquires_total')

  const answers: { path: string; res: LightMyRequestResponse }[] = []
  const paths = ['/normal', '/low', '/high', '/nodb']
  const until = Date.now() + 2_500
  await Promise.all(
    Array.from({ length: 48 }, async (_, i) => {
      const path = paths[i % paths.length] as string
      while (Date.now() < until) {
        const res = await instance.inject(path)
        answers.push({ path, res })
        // A turn of the event loop between requests: inject alone never yields to I/O.
        await new Promise((resolve) => setImmediate(resolve))
      }
    }),
  )

  const byCode = new Map<string, number>()
  for (const { res } of answers) {
    if (res.statusCode === 200) continue
    expect(res.statusCode).toBe(503)
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8')
    const body = res.json() as { code: string; statusCode: number; message: string }
    expect(body.code).toMatch(/^FST_PG_POOL_[A-Z_]+$/)
    expect(res.body.length).toBeLessThan(300)
    const retryAfter = String(res.headers['retry-after'])
    expect(retryAfter).toMatch(/^[0-9]+$/)
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(minRetryAfter)
    expect(Number(retryAfter)).toBeLessThanOrEqual(maxRetryAfter)
    byCode.set(body.code, (byCode.get(body.code) ?? 0) + 1)
  }
  // The routes that use no database were never refused.
  const nodb = answers.filter((a) => a.path === '/nodb')
  expect(nodb.length).toBeGreaterThan(0)
  expect(nodb.every((a) => a.res.statusCode === 200)).toBe(true)

  const after = await instance.inject('/metrics')
  const shed = series(after.body, 'pg_pool_requests_shed_total')
  const acq = series(after.body, 'pg_pool_acquires_total')
  const delta = (m: Map<string, number>, b: Map<string, number>, k: string) => (m.get(k) ?? 0) - (b.get(k) ?? 0)
  const total503 = [...byCode.values()].reduce((a, b) => a + b, 0)
  expect(total503).toBeGreaterThan(0)
  expect(byCode.get('FST_PG_POOL_OVERLOADED') ?? 0).toBe(delta(shed, shedBefore, 'queue_delay'))
  expect(byCode.get('FST_PG_POOL_QUEUE_FULL') ?? 0).toBe(
    delta(shed, shedBefore, 'queue_full') + delta(acq, acqBefore, 'rejected'),
  )
  expect(byCode.get('FST_PG_POOL_ACQUIRE_TIMEOUT') ?? 0).toBe(delta(acq, acqBefore, 'timeout'))
  expect(delta(shed, shedBefore, 'process')).toBe(0)

  // The load is over: an idle pool refuses nobody, whatever the priority.
  for (const path of ['/low', '/normal', '/high']) {
    const res = await instance.inject(path)
    expect(res.statusCode).toBe(200)
  }
}, 60_000)

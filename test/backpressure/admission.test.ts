import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../support/database.js'
import { type BackpressureApp, backpressureApp, closedLoop } from './helpers.js'

/**
 * What only a real server shows: overloads answered 503 with Retry-After and a coded body before
 * the body is parsed, exempt routes answering meanwhile, refusals on the diagnostics channel, held
 * refusals answered at close. The admission rules under load (standing queues, CoDel, priorities,
 * stalls, pipelined queues, cold and growing pools, retry storms, Retry-After by drain rate) are
 * unit tests on a fake clock: packages/backpressure/test.
 */

let db: TestDatabase
let current: BackpressureApp[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(current.map((t) => t.app.close()))
  current = []
})
afterAll(() => db.drop())

async function start(...args: Parameters<typeof backpressureApp>): Promise<BackpressureApp> {
  const t = await backpressureApp(...args)
  current.push(t)
  return t
}

/** Samples `waiting` on every event loop turn until `done` settles; resolves with the maximum. */
function sampleWaiting(t: BackpressureApp, done: Promise<unknown>): Promise<number> {
  let most = 0
  let over = false
  void done.finally(() => {
    over = true
  })
  return new Promise((resolve) => {
    const tick = () => {
      most = Math.max(most, t.app.pgPool.stats().waiting)
      if (over) resolve(most)
      else setImmediate(tick)
    }
    tick()
  })
}

describe('queue cap', () => {
  test('waiters at maxWaiting: 503 + Retry-After + coded body, before the body is parsed; waiters never pass the cap', async () => {
    const t = await start(db.url, { max: 1, maxWaiting: 3 })
    const { app } = t
    const admitted = Array.from({ length: 4 }, () => app.inject('/hold/300'))
    expect(await waitFor(() => app.pgPool.stats().waiting === 3)).toBe(true)
    const all = Promise.all(admitted)
    const most = sampleWaiting(t, all)

    const refused = await Promise.all(Array.from({ length: 6 }, () => app.inject('/hold/10')))
    for (const res of refused) {
      expect(res.statusCode).toBe(503)
      expect(res.headers['retry-after']).toMatch(/^[1-9][0-9]*$/)
      expect(Number(res.headers['retry-after'])).toBeLessThanOrEqual(30)
      expect(res.headers['content-type']).toBe('application/json; charset=utf-8')
      expect(res.json()).toEqual({
        statusCode: 503,
        code: 'FST_PG_POOL_QUEUE_FULL',
        error: 'Service Unavailable',
        message: 'Too many requests are waiting for a database connection (maxWaiting 3)',
      })
    }
    // Refused at the door: a malformed body is never parsed (it would be a 400).
    const post = await app.inject({
      method: 'POST',
      url: '/items',
      headers: { 'content-type': 'application/json' },
      payload: '{not json',
    })
    expect(post.statusCode).toBe(503)
    // High priority is refused at the cap too: the cap is the one limit nobody passes.
    expect((await app.inject('/high/10')).statusCode).toBe(503)

    expect((await all).map((res) => res.statusCode)).toEqual([200, 200, 200, 200])
    expect(await most).toBeLessThanOrEqual(3)
    expect(t.shed).toHaveLength(8)
    expect(new Set(t.shed.map((s) => s.reason))).toEqual(new Set(['queue_full']))
    expect(t.shed[0]).toEqual({ reason: 'queue_full', route: '/hold/:ms' })
    // Nothing refused reached the pool.
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
  })

  test('exempt routes answer while the queue is at its cap', async () => {
    const { app, shed } = await start(db.url, { max: 1, maxWaiting: 2 })
    const admitted = Array.from({ length: 3 }, () => app.inject('/hold/300'))
    expect(await waitFor(() => app.pgPool.stats().waiting === 2)).toBe(true)
    expect((await app.inject('/hold/1')).statusCode).toBe(503)
    expect((await app.inject('/nodb')).statusCode).toBe(200)
    expect((await app.inject('/health/live')).statusCode).toBe(200)
    expect((await app.inject('/not-a-route')).statusCode).toBe(404)
    expect((await Promise.all(admitted)).map((res) => res.statusCode)).toEqual([200, 200, 200])
    expect(shed).toEqual([{ reason: 'queue_full', route: '/hold/:ms' }])
  })
})

describe('queueing delay', () => {
  test('a standing queue is shed with FST_PG_POOL_OVERLOADED and Retry-After; exempt routes that use the database still answer', async () => {
    // maxWaiting far above the load: every refusal here comes from the delay rule.
    const t = await start(db.url, { max: 1, maxWaiting: 200 })
    const { app } = t
    const statuses: number[] = []
    const codes = new Set<string>()
    const retryAfters = new Set<string | string[] | undefined>()
    const load = closedLoop(app, '/hold/50', 30, 1_000, (res) => {
      statuses.push(res.statusCode)
      if (res.statusCode === 503) {
        codes.add(res.json().code)
        retryAfters.add(res.headers['retry-after'])
      }
    })
    // In the middle of the overload, exempt routes that do use the database wait and succeed.
    expect(await waitFor(() => t.shed.length > 0, 5_000, 5)).toBe(true)
    const [health, optedOut] = await Promise.all([app.inject('/health/ready'), app.inject('/opted-out/1')])
    expect(health.statusCode).toBe(200)
    expect(optedOut.statusCode).toBe(200)
    await load

    const refused = statuses.filter((s) => s === 503).length
    const served = statuses.filter((s) => s === 200).length
    expect(refused).toBeGreaterThan(0)
    expect(served).toBeGreaterThan(0)
    expect(statuses.length).toBe(refused + served)
    expect([...codes]).toEqual(['FST_PG_POOL_OVERLOADED'])
    for (const value of retryAfters) expect(value).toMatch(/^[1-9][0-9]*$/)
    expect(new Set(t.shed.map((s) => s.reason))).toEqual(new Set(['queue_delay']))
    expect(t.shed[0]).toEqual({ reason: 'queue_delay', route: '/hold/:ms' })
  })
})

describe('retry storm', () => {
  test('a refusal held back during a storm is answered when the app closes', async () => {
    // Any refusal rate above the drain rate is a storm here, and a held refusal waits 5 to 15 s.
    const t = await start(db.url, { max: 1, maxWaiting: 1 }, { retryStorm: { factor: 0.001, delay: 10_000 } })
    const { app } = t
    // The hold time is known, and a half-interval has passed for the refusal rate.
    expect((await app.inject('/hold/20')).statusCode).toBe(200)
    await sleep(60)
    const admitted = [app.inject('/hold/300'), app.inject('/hold/300')]
    expect(await waitFor(() => app.pgPool.stats().waiting === 1)).toBe(true)
    let answered = false
    const held = app.inject('/hold/1').then((res) => {
      answered = true
      return res
    })
    expect(await waitFor(() => t.shed.length === 1)).toBe(true)
    // Refused (published at once), not answered.
    await sleep(200)
    expect(answered).toBe(false)
    await Promise.all(admitted)
    current = current.filter((x) => x !== t)
    const closing = app.close()
    const outcome = await Promise.race([held, sleep(5_000).then(() => 'still held' as const)])
    expect(outcome).not.toBe('still held')
    const res = outcome as Awaited<typeof held>
    expect(res.statusCode).toBe(503)
    expect(res.json().code).toBe('FST_PG_POOL_QUEUE_FULL')
    expect(res.headers['retry-after']).toMatch(/^[1-9][0-9]*$/)
    await closing
    expect(t.shed).toEqual([{ reason: 'queue_full', route: '/hold/:ms' }])
  })
})

describe('Retry-After', () => {
  test("the core's own acquire-timeout 503 carries the bounded Retry-After", async () => {
    const { app } = await start(db.url, { max: 1, acquireTimeout: 100, retryAfter: 9 }, { retryAfter: { max: 4 } })
    const hold = app.inject('/hold/400')
    expect(await waitFor(() => app.pgPool.stats().leased === 1)).toBe(true)
    const res = await app.inject('/high/1')
    expect(res.statusCode).toBe(503)
    expect(res.json().code).toBe('FST_PG_POOL_ACQUIRE_TIMEOUT')
    expect(res.headers['retry-after']).toBe('4')
    expect((await hold).statusCode).toBe(200)
  })
})

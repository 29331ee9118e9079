import type { LightMyRequestResponse } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../support/database.js'
import { startTcpProxy } from '../support/tcp-proxy.js'
import { type BackpressureApp, backpressureApp, closedLoop } from './helpers.js'

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

describe('maxWaiting 0 (no queue)', () => {
  test('refused at the door once every connection is leased; a cold pool opens max connections for a burst, low priority included', async () => {
    const t = await start(db.url, { max: 3, maxWaiting: 0, lazy: true })
    const { app } = t
    // Cold: the pool opens a connection for each of these. Low priority gets half the cap, here
    // half the connections the pool can still open: it is admitted with one request waiting.
    const held = [app.inject('/hold/300')]
    expect(await waitFor(() => app.pgPool.stats().waiting === 1, 5_000, 1)).toBe(true)
    held.push(app.inject('/low/300'))
    expect(await waitFor(() => app.pgPool.stats().waiting + app.pgPool.stats().leased === 2, 5_000, 1)).toBe(true)
    held.push(app.inject('/hold/300'))
    expect(await waitFor(() => app.pgPool.stats().leased === 3)).toBe(true)
    const refused = await app.inject('/hold/1')
    expect(refused.statusCode).toBe(503)
    expect(refused.json()).toMatchObject({ code: 'FST_PG_POOL_QUEUE_FULL' })
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    expect((await app.inject('/high/1')).statusCode).toBe(503)
    expect((await Promise.all(held)).map((res) => res.statusCode)).toEqual([200, 200, 200])
    expect(t.shed).toEqual([
      { reason: 'queue_full', route: '/hold/:ms' },
      { reason: 'queue_full', route: '/high/:ms' },
    ])
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect((await app.inject('/low/1')).statusCode).toBe(200)
  })

  test('pipelined requests join a shared connection with room instead of being refused', async () => {
    const t = await start(db.url, { max: 1, maxWaiting: 0, pipelineDepth: 4 })
    const { app } = t
    // One at a time, each admitted with the one connection leased (shared) and nobody waiting.
    const sharing: Promise<LightMyRequestResponse>[] = []
    for (let i = 1; i <= 4; i++) {
      sharing.push(app.inject('/shared/300'))
      expect(await waitFor(() => app.pgPool.stats().pipelined === i, 5_000, 1)).toBe(true)
      expect(app.pgPool.stats()).toMatchObject({ leased: 1, waiting: 0 })
    }
    // The connection is full (depth 4): the next pipelined request and an exclusive one are refused.
    expect((await app.inject('/shared/1')).statusCode).toBe(503)
    expect((await app.inject('/hold/1')).statusCode).toBe(503)
    expect((await Promise.all(sharing)).map((res) => res.statusCode)).toEqual([200, 200, 200, 200])
    expect(t.shed.map((s) => s.reason)).toEqual(['queue_full', 'queue_full'])
  })
})

describe('queueing delay', () => {
  test('a standing queue is shed with FST_PG_POOL_OVERLOADED, exempt routes still answer, and admission clears once it drains', async () => {
    // maxWaiting far above the load: every refusal here comes from the delay rule.
    const t = await start(db.url, { max: 1, maxWaiting: 200 })
    const { app } = t
    const statuses: number[] = []
    const codes = new Set<string>()
    const load = closedLoop(app, '/hold/50', 30, 1_500, (res) => {
      statuses.push(res.statusCode)
      if (res.statusCode === 503) codes.add(res.json().code)
    })
    // In the middle of the overload, exempt routes that do use the database wait and succeed.
    await sleep(700)
    expect(t.shed.length).toBeGreaterThan(0)
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
    expect(new Set(t.shed.map((s) => s.reason))).toEqual(new Set(['queue_delay']))

    // Drained: the next request is admitted at once.
    expect(await waitFor(() => app.pgPool.stats().waiting === 0 && app.pgPool.stats().leased === 0)).toBe(true)
    expect((await app.inject('/hold/1')).statusCode).toBe(200)
    // Fast again for a while, a small queue is accepted again.
    const until = Date.now() + 300
    while (Date.now() < until) expect((await app.inject('/hold/1')).statusCode).toBe(200)
    const before = t.shed.length
    const burst = await Promise.all(
      [40, 1, 1].map(async (ms, i) => {
        await sleep(i * 10)
        return app.inject(`/hold/${ms}`)
      }),
    )
    expect(burst.map((res) => res.statusCode)).toEqual([200, 200, 200])
    expect(t.shed.length).toBe(before)
  })

  test('CoDel: a burst within maxDelay is absorbed; once waits stand above target for an interval, requests are held to target', async () => {
    // maxDelay above anything this load queues: every refusal here comes from the standing-queue state.
    const t = await start(db.url, { max: 1, maxWaiting: 200 }, { target: 20, interval: 100, maxDelay: 2_000 })
    const { app } = t
    const started = Date.now()
    let firstShed = 0
    t.onRefusal(() => {
      firstShed ||= Date.now() - started
    })
    const statuses: number[] = []
    await closedLoop(app, '/hold/50', 10, 1_000, (res) => statuses.push(res.statusCode))
    expect(statuses.filter((s) => s === 503).length).toBeGreaterThan(0)
    expect(new Set(t.shed.map((s) => s.reason))).toEqual(new Set(['queue_delay']))
    // Nothing was refused before waits had stood above target for a whole interval.
    expect(firstShed).toBeGreaterThanOrEqual(120)
  })

  test('low priority is refused while normal and high priority are still queued', async () => {
    // maxDelay far above the queue: normal requests are only refused at the cap here.
    const { app, shed } = await start(db.url, { max: 1, maxWaiting: 20 }, { maxDelay: 5_000 })
    const admitted = Array.from({ length: 4 }, () => app.inject('/hold/200'))
    expect(await waitFor(() => app.pgPool.stats().waiting === 3 && app.pgPool.stats().oldestWaitMs > 60)).toBe(true)
    const low = await app.inject('/low/1')
    expect(low.statusCode).toBe(503)
    expect(low.json().code).toBe('FST_PG_POOL_OVERLOADED')
    const [normal, high] = await Promise.all([app.inject('/hold/1'), app.inject('/high/1')])
    expect(normal.statusCode).toBe(200)
    expect(high.statusCode).toBe(200)
    expect((await Promise.all(admitted)).map((res) => res.statusCode)).toEqual([200, 200, 200, 200])
    expect(shed).toEqual([{ reason: 'queue_delay', route: '/low/:ms' }])
  })

  test('a busy but healthy pool (max 5, 10 clients, short queries) is never refused', async () => {
    const { app, shed } = await start(db.url, { max: 5 })
    const statuses = new Map<number, number>()
    let waited = 0
    app.pgPool.on('acquire', (waitMs) => {
      if (waitMs > 0) waited++
    })
    await closedLoop(app, '/hold/0', 10, 1_500, (res) => {
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
    })
    expect([...statuses.keys()]).toEqual([200])
    expect(statuses.get(200)).toBeGreaterThan(200)
    // The pool was really busy: requests did queue for a connection.
    expect(waited).toBeGreaterThan(0)
    expect(shed).toEqual([])
  })
})

describe('event-loop stalls', () => {
  test('a healthy load is not refused because the process stalled (200 ms every 500 ms)', async () => {
    const { app, shed } = await start(db.url, { max: 5 })
    // 15 clients on 5 connections held 10 ms each: 10 wait about 20 ms, half of target. The route
    // is slow enough that the test is not CPU-bound, so the waits do not depend on the machine.
    // Warmed up first (a cold process serves its first requests far slower than it will, and
    // admission rightly sees their queue as a long wait), learning the hold time without stalls.
    await closedLoop(app, '/hold/10', 15, 500, () => {})
    shed.length = 0
    const statuses = new Map<number, number>()
    let stalls = 0
    // A synchronous stall, as a long GC pause or a CPU-heavy handler elsewhere in the app makes:
    // the leases in flight are held through it, but the pool drains as fast as before after it.
    // Counted as hold time, the five 200 ms holds would read as a pool four times slower.
    const stall = setInterval(() => {
      stalls++
      const until = performance.now() + 200
      while (performance.now() < until);
    }, 500)
    try {
      await closedLoop(app, '/hold/10', 15, 2_300, (res) => {
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
      })
    } finally {
      clearInterval(stall)
    }
    expect(stalls).toBeGreaterThanOrEqual(4)
    expect(shed).toEqual([])
    expect([...statuses.keys()]).toEqual([200])
  })
})

describe('pipelined routes', () => {
  test('requests queued on shared connections count as queueing delay: shed although nobody waits for a connection', async () => {
    const t = await start(db.url, { max: 1, pipelineDepth: 20, maxWaiting: 200 })
    const { app } = t
    // Admission learns the hold time (~50 ms) from a few requests.
    for (let i = 0; i < 4; i++) expect((await app.inject('/shared/50')).statusCode).toBe(200)
    // Four requests share the one connection, three of them queued behind the first.
    const sharing = Array.from({ length: 4 }, () => app.inject('/shared/200'))
    expect(await waitFor(() => app.pgPool.stats().pipelined === 4)).toBe(true)
    expect(app.pgPool.stats()).toMatchObject({ waiting: 0, shared: 1 })
    // Nobody waits for a connection, but three statements of ~50 ms are ahead: above maxDelay.
    const refused = await app.inject('/shared/1')
    expect(refused.statusCode).toBe(503)
    expect(refused.json().code).toBe('FST_PG_POOL_OVERLOADED')
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    expect(t.shed).toEqual([{ reason: 'queue_delay', route: '/shared/:ms' }])
    // A request that needs no connection of its own is not affected; once drained, admitted.
    expect((await app.inject('/nodb')).statusCode).toBe(200)
    expect((await Promise.all(sharing)).map((res) => res.statusCode)).toEqual([200, 200, 200, 200])
    expect((await app.inject('/shared/1')).statusCode).toBe(200)
  })

  test('a busy but healthy pipelined pool (max 2, 20 clients, short queries) is never refused', async () => {
    const { app, shed } = await start(db.url, { max: 2 })
    let mostPipelined = 0
    app.pgPool.on('acquire', () => {
      mostPipelined = Math.max(mostPipelined, app.pgPool.stats().pipelined)
    })
    // Warmed up first: a cold process (JIT) serves its first requests far slower than it will,
    // and admission rightly sees their queue as a long wait.
    await closedLoop(app, '/shared/0', 20, 500, () => {})
    shed.length = 0
    const statuses = new Map<number, number>()
    await closedLoop(app, '/shared/0', 20, 1_500, (res) => {
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
    })
    expect([...statuses.keys()]).toEqual([200])
    expect(statuses.get(200)).toBeGreaterThan(200)
    // Connections really were shared.
    expect(mostPipelined).toBeGreaterThan(2)
    expect(shed).toEqual([])
  })
})

describe('cold pool', () => {
  test('a burst that meets the pool still opening its connections is not refused; once they are open, an overload is', async () => {
    const proxy = await startTcpProxy(Number(new URL(db.url).port))
    try {
      // The connection register opens is set up at once; every later one takes 250 ms (a busy
      // server forking backends, a pooler logging in).
      proxy.connectDelay = (index) => (index === 0 ? 0 : 250)
      const { app, shed } = await start(proxy.urlFor(db.url), { max: 4 })
      const statuses = new Map<number, number>()
      let mostConnecting = 0
      app.pgPool.on('acquire', () => {
        mostConnecting = Math.max(mostConnecting, app.pgPool.stats().connecting)
      })
      // 12 clients on 4 connections is a healthy load, but the 3 connections the pool opens for
      // it take 250 ms: meanwhile the pipelined requests share the one open connection and
      // queue far longer than target behind each other.
      await closedLoop(app, '/shared/10', 12, 700, (res) => {
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
      })
      expect([...statuses.keys()]).toEqual([200])
      expect(shed).toEqual([])
      expect(mostConnecting).toBeGreaterThan(0)
      expect(proxy.accepted).toBeGreaterThanOrEqual(3)

      // Once every connection is open and an interval has passed, the delay signals are back.
      expect(await waitFor(() => app.pgPool.stats().open === 4 && app.pgPool.stats().connecting === 0, 3_000)).toBe(
        true,
      )
      await sleep(150)
      // 20 requests queue (4 × 100 ms ahead of the last of them); 20 more then meet that queue.
      const queued = Array.from({ length: 20 }, () => app.inject('/hold/100'))
      expect(await waitFor(() => app.pgPool.stats().waiting === 16, 1_000, 5)).toBe(true)
      const burst = await Promise.all([...queued, ...Array.from({ length: 20 }, () => app.inject('/hold/100'))])
      const refused = burst.filter((res) => res.statusCode === 503)
      expect(refused.length).toBeGreaterThan(0)
      expect(refused.every((res) => res.json().code === 'FST_PG_POOL_OVERLOADED')).toBe(true)
      expect(shed.every((s) => s.reason === 'queue_delay')).toBe(true)
    } finally {
      await proxy.close()
    }
  })
})

describe('a warm pool opening a connection', () => {
  test('an overload that makes it open one more connection is held to maxDelay of work meanwhile, not queued to the cap', async () => {
    const proxy = await startTcpProxy(Number(new URL(db.url).port))
    try {
      // The first three connections open at once, the fourth takes 400 ms.
      proxy.connectDelay = (index) => (index < 3 ? 0 : 400)
      const started = await start(proxy.urlFor(db.url), { max: 4, maxWaiting: 100 })
      const { app, shed } = started
      // A steady load on three connections: the pool knows its hold time (20 ms).
      const connectingAtRefusal: number[] = []
      started.onRefusal(() => connectingAtRefusal.push(app.pgPool.stats().connecting))
      const steady = closedLoop(app, '/hold/20', 3, 900, () => {})
      await sleep(400)
      expect(app.pgPool.stats().open).toBe(3)
      expect(shed).toEqual([])
      // 60 more, one per millisecond: 4 connections drain one per 5 ms, so maxDelay (60 ms) is
      // 12 queued.
      const burst = Promise.all(
        Array.from({ length: 60 }, async (_, i) => {
          await sleep(i)
          return app.inject('/hold/20')
        }),
      )
      const mostWaiting = await sampleWaiting(started, burst)
      const answers = await burst
      await steady
      const refused = answers.filter((res) => res.statusCode === 503)
      expect(answers.filter((res) => res.statusCode === 200).length + refused.length).toBe(60)
      expect(refused.length).toBeGreaterThan(30)
      expect(refused.every((res) => res.json().code === 'FST_PG_POOL_OVERLOADED')).toBe(true)
      expect(shed.every((s) => s.reason === 'queue_delay')).toBe(true)
      // Refused while the fourth connection was being opened (the settling period).
      expect(connectingAtRefusal.length).toBeGreaterThan(0)
      expect(connectingAtRefusal.every((n) => n === 1)).toBe(true)
      expect(mostWaiting).toBeLessThanOrEqual(16)
      expect(proxy.accepted).toBe(4)
    } finally {
      await proxy.close()
    }
  })
})

describe('retry storm', () => {
  /** Clients that retry at once on 503; resolves with the latency of every 503. */
  async function storm(t: BackpressureApp, clients: number, durationMs: number): Promise<number[]> {
    return (await timedStorm(t, clients, durationMs)).map((r) => r.ms)
  }

  /** The same, with when each refused request was sent (ms since the storm began). */
  async function timedStorm(
    t: BackpressureApp,
    clients: number,
    durationMs: number,
  ): Promise<{ at: number; ms: number }[]> {
    const refusals: { at: number; ms: number }[] = []
    const begun = performance.now()
    const until = Date.now() + durationMs
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (Date.now() < until) {
          const started = performance.now()
          const res = await t.app.inject('/hold/50')
          if (res.statusCode === 503) refusals.push({ at: started - begun, ms: performance.now() - started })
        }
      }),
    )
    return refusals
  }

  test('refusals are held back while clients retry much faster than the pool drains', async () => {
    const t = await start(db.url, { max: 1, maxWaiting: 200 }, { retryStorm: { factor: 10, delay: 100 } })
    const refusals = await timedStorm(t, 30, 1_000)
    expect(refusals.length).toBeGreaterThan(0)
    // Held refusals wait 0.5 to 1.5 × the delay (jittered, so that they do not come back together).
    const isHeld = (r: { ms: number }) => r.ms >= 45
    // The storm is seen within its first interval or two. From then on a large part of the
    // refusals wait the delay: the storm is re-judged after each delay, and the jittered holds
    // come back spread out, so it ends and starts again and some are answered at once (40–85%
    // held, measured). The point is the volume: 30 clients make a few hundred refusals a second
    // instead of the thousands they make unheld (next test: over 500 in half a second).
    const later = refusals.filter((r) => r.at >= 250)
    expect(later.length).toBeGreaterThan(0)
    expect(later.filter(isHeld).length).toBeGreaterThanOrEqual(0.4 * later.length)
    expect(refusals.length).toBeLessThan(400)
    expect(Math.max(...refusals.map((r) => r.ms))).toBeGreaterThan(100)
  })

  test('retryStorm: false answers every refusal at once', async () => {
    const t = await start(db.url, { max: 1, maxWaiting: 200 }, { retryStorm: false })
    const refusals = await storm(t, 30, 500)
    expect(refusals.length).toBeGreaterThan(500)
    // Nothing is held: even on a loaded machine no refusal comes near the 100 ms a hold would take.
    expect(refusals.filter((ms) => ms >= 95)).toEqual([])
  })
})

describe('Retry-After', () => {
  /** Saturates the app and reads the Retry-After of its refusals. */
  async function retryAfterAtCap(t: BackpressureApp, holdMs: number): Promise<number[]> {
    const { app } = t
    const { maxWaiting, max } = app.pgPool.options
    const values: number[] = []
    await closedLoop(app, `/hold/${holdMs}`, max + maxWaiting + 4, 1_200, (res) => {
      if (res.statusCode === 503) {
        values.push(Number(res.headers['retry-after']))
      }
    })
    return values
  }

  test('follows the drain rate, within the configured bounds', async () => {
    const [slow, fast] = await Promise.all([
      start(db.url, { max: 1, maxWaiting: 10 }, { retryAfter: { min: 1, max: 3 }, retryStorm: false }),
      start(db.url, { max: 2, maxWaiting: 10 }, { retryAfter: { min: 1, max: 3 }, retryStorm: false }),
    ])
    // slow drains ~5 requests/s: 11 ahead of a new request take ~2.2 s; fast drains ~200/s.
    const [slowValues, fastValues] = await Promise.all([retryAfterAtCap(slow, 200), retryAfterAtCap(fast, 10)])
    expect(slowValues.length).toBeGreaterThan(0)
    expect(fastValues.length).toBeGreaterThan(0)
    for (const v of [...slowValues, ...fastValues]) {
      expect(Number.isInteger(v)).toBe(true)
      expect(v).toBeGreaterThanOrEqual(1)
      expect(v).toBeLessThanOrEqual(3)
    }
    // Once the rate is learnt (the later half of the run), Little's law sets the value.
    const median = (values: number[]) => [...values.slice(values.length >> 1)].sort((a, b) => a - b)[values.length >> 2]
    expect(median(slowValues)).toBeGreaterThanOrEqual(2)
    expect(median(fastValues)).toBe(1)
  })

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

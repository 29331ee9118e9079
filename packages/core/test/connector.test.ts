import { afterEach, describe, expect, test, vi } from 'vitest'
import {
  Connector,
  RETRY_BACKOFF,
  RETRY_INITIAL_DELAY_MS,
  RETRY_JITTER,
  RETRY_MAX_DELAY_MS,
  retryDelay,
} from '../src/connector.js'
import type { PoolConnection } from '../src/server-connection.js'
import { FakeClock, flush } from './fake-clock.js'
import { FakeConnection, FakeFactory, refused } from './fake-connection.js'
import { FakeHolder, poolHarness } from './fake-holder.js'

afterEach(() => {
  vi.restoreAllMocks()
})

/** The delays without jitter: 50, 100, 200, 400, 800, 1000, 1000, ... */
function baseDelays(count: number): number[] {
  return Array.from({ length: count }, (_, i) =>
    Math.min(RETRY_MAX_DELAY_MS, RETRY_INITIAL_DELAY_MS * RETRY_BACKOFF ** i),
  )
}

describe('retryDelay', () => {
  test('grows by RETRY_BACKOFF from RETRY_INITIAL_DELAY_MS up to RETRY_MAX_DELAY_MS', () => {
    expect(baseDelays(8)).toEqual([50, 100, 200, 400, 800, 1_000, 1_000, 1_000])
    expect(Array.from({ length: 8 }, (_, i) => retryDelay(i + 1, () => 0))).toEqual(baseDelays(8))
  })

  test('takes up to RETRY_JITTER of the wait off at random, never more', () => {
    expect(RETRY_JITTER).toBe(0.5)
    for (const [i, base] of baseDelays(8).entries()) {
      expect(retryDelay(i + 1, () => 0.5)).toBe(base * (1 - RETRY_JITTER * 0.5))
      // Math.random() < 1: the shortest wait is just above half.
      expect(retryDelay(i + 1, () => 0.999_999)).toBeGreaterThan(base * (1 - RETRY_JITTER))
    }
    for (let i = 0; i < 200; i++) {
      const delay = retryDelay(3)
      expect(delay).toBeGreaterThan(200 * (1 - RETRY_JITTER))
      expect(delay).toBeLessThanOrEqual(200)
    }
  })
})

/** A Connector whose openings fail while `down`, retrying (opening again) whenever it is told to. */
function connectorHarness(random: () => number) {
  const clock = new FakeClock()
  const factory = new FakeFactory(clock)
  const log = { opened: [] as PoolConnection[], failed: 0, retries: 0 }
  const connector: Connector = new Connector(
    factory.open,
    clock,
    {
      opened: (conn) => log.opened.push(conn),
      failed: () => log.failed++,
      retry: () => {
        log.retries++
        connector.open()
      },
    },
    random,
  )
  return { clock, factory, connector, log }
}

describe('Connector', () => {
  test('after each failure waits the backoff on its clock before the next attempt; a success resets it', async () => {
    const { clock, factory, connector, log } = connectorHarness(() => 0)
    factory.defaultPlan = { error: refused() }
    connector.open()
    expect(connector.opening).toBe(1)
    await flush()
    for (const [i, delay] of baseDelays(7).entries()) {
      expect(log.failed).toBe(i + 1)
      expect(connector.opening).toBe(0)
      expect(connector.waiting).toBe(true)
      expect(clock.dueIn()).toEqual([delay])
      await clock.advanceAsync(delay - 1)
      expect(log.retries).toBe(i)
      clock.advance(1)
      expect(log.retries).toBe(i + 1)
      expect(connector.waiting).toBe(false)
      expect(connector.opening).toBe(1)
      await flush()
    }
    // Attempts at exactly the cumulative delays.
    const gaps = factory.attempts.slice(1).map((at, i) => at - (factory.attempts[i] as number))
    expect(gaps).toEqual(baseDelays(7))

    // The database is back: the next attempt opens, and the count of failures starts over.
    factory.defaultPlan = {}
    await clock.advanceAsync(RETRY_MAX_DELAY_MS)
    expect(log.opened).toHaveLength(1)
    expect(connector.waiting).toBe(false)
    factory.defaultPlan = { error: refused() }
    connector.open()
    await flush()
    expect(clock.dueIn()).toEqual([RETRY_INITIAL_DELAY_MS])
  })

  test('jitter comes from its random source', async () => {
    const { clock, factory, connector } = connectorHarness(() => 0.8)
    factory.defaultPlan = { error: refused() }
    connector.open()
    await flush()
    expect(clock.dueIn()).toEqual([RETRY_INITIAL_DELAY_MS * (1 - RETRY_JITTER * 0.8)])
  })

  test('stop() gives up the openings in flight and the retry', async () => {
    const { clock, factory, connector, log } = connectorHarness(() => 0)
    factory.defaultPlan = { error: refused() }
    connector.open()
    await flush()
    factory.defaultPlan = { hold: true }
    await clock.advanceAsync(RETRY_INITIAL_DELAY_MS)
    expect(connector.opening).toBe(1)
    connector.stop()
    expect(factory.aborted).toBe(1)
    await flush()
    expect(log.failed).toBe(1)
    expect(clock.pending).toBe(0)
  })

  test('a connection that opens after stop() is ended, never handed over', async () => {
    const clock = new FakeClock()
    const opened: PoolConnection[] = []
    let finishOpening: ((conn: FakeConnection) => void) | undefined
    // An opening that does not heed the abort (the driver finished its handshake just then).
    const connector = new Connector(
      () =>
        new Promise((resolve) => {
          finishOpening = resolve
        }),
      clock,
      { opened: (conn) => opened.push(conn), failed: () => {}, retry: () => {} },
    )
    connector.open()
    connector.stop()
    const late = new FakeConnection(clock, 1)
    finishOpening?.(late)
    await flush()
    expect(opened).toEqual([])
    expect(late.ends).toEqual([{ reason: 'shutdown', graceSeconds: 0 }])
    expect(connector.opening).toBe(0)
  })

  test('several openings failing together arm one retry, and stop() leaves no timer behind', async () => {
    const { clock, factory, connector, log } = connectorHarness(() => 0)
    factory.defaultPlan = { error: refused() }
    connector.open()
    connector.open()
    connector.open()
    await flush()
    expect(log.failed).toBe(3)
    expect(connector.waiting).toBe(true)
    // One retry pending, not one per failure: each would end the wait early and open again.
    expect(clock.pending).toBe(1)
    connector.stop()
    expect(clock.pending).toBe(0)
  })
})

describe('the pool and its connector', () => {
  test('a waiter keeps waiting through failed openings while the pool has a connection, and gets the next that opens', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0)
    const h = poolHarness({ max: 2, acquireTimeout: 5_000 })
    const a = new FakeHolder()
    h.acquire(a)
    await flush()
    h.factory.failNext(6)
    const b = new FakeHolder()
    h.pool.wait(b)
    await flush()
    expect(h.of('connectError')).toHaveLength(1)
    expect(b.error).toBeUndefined()
    expect(h.pool.stats()).toMatchObject({ open: 1, connecting: 0, waiting: 1 })
    await h.clock.advanceAsync(3_000)
    expect(b.error).toBeUndefined()
    expect(b.conn).toBe(h.factory.connections[1])
    const gaps = h.factory.attempts.slice(2).map((at, i) => at - (h.factory.attempts[i + 1] as number))
    expect(gaps).toEqual(baseDelays(6))
    expect(h.of('connectError')).toHaveLength(6)
    const [[first]] = h.of('connectError') as [[Error]]
    expect(first).toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED' })
    expect(first.cause).toMatchObject({ code: 'ECONNREFUSED' })
  })

  test('with jitter, each wait lies between half and all of the backoff', async () => {
    const h = poolHarness({ max: 2 })
    await (async () => {
      h.acquire(new FakeHolder())
      await flush()
    })()
    h.factory.failNext(7)
    h.pool.wait(new FakeHolder())
    await h.clock.advanceAsync(6_000)
    const gaps = h.factory.attempts.slice(2).map((at, i) => at - (h.factory.attempts[i + 1] as number))
    expect(gaps).toHaveLength(7)
    for (const [i, base] of baseDelays(7).entries()) {
      expect(gaps[i]).toBeGreaterThan(base * (1 - RETRY_JITTER))
      expect(gaps[i]).toBeLessThanOrEqual(base)
    }
  })

  test('when no connection can be opened at all, every waiter fails at once with the coded error', async () => {
    const h = poolHarness({ max: 3, acquireTimeout: 5_000 }, (f) => {
      f.defaultPlan = { error: refused() }
    })
    const waiters = Array.from({ length: 5 }, () => new FakeHolder())
    for (const waiter of waiters) h.pool.wait(waiter)
    // One opening per waiter, up to max.
    expect(h.pool.stats()).toMatchObject({ connecting: 3, waiting: 5 })
    await flush()
    for (const waiter of waiters) {
      expect(waiter.error).toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED', statusCode: 503 })
      expect(waiter.error?.cause).toMatchObject({ code: 'ECONNREFUSED' })
    }
    expect(h.of('acquireError')).toEqual(Array.from({ length: 5 }, () => ['error', 0]))
    expect(h.of('connectError')).toHaveLength(3)
    expect(h.pool.stats()).toMatchObject({ open: 0, connecting: 0, waiting: 0 })
  })

  test('a retry storm of waiters: rounds of at most max openings, each after the backoff of the failures before it', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0)
    const h = poolHarness({ max: 4, acquireTimeout: 5_000 }, (f) => {
      f.defaultPlan = { error: refused() }
    })
    // 40 clients that ask again 1 ms after each failure, for 3 s.
    const errors: string[] = []
    const stopAt = h.clock.now() + 3_000
    const client = (): void => {
      const holder = new FakeHolder()
      holder.onFailed = (error) => {
        errors.push(String((error as { code?: unknown }).code))
        if (h.clock.now() < stopAt) h.clock.setTimeout(client, 1)
      }
      h.pool.wait(holder)
    }
    for (let i = 0; i < 40; i++) client()
    await h.clock.advanceAsync(3_000)
    // Nobody waits out acquireTimeout: each fails with the next failed round.
    expect(new Set(errors)).toEqual(new Set(['FST_PG_POOL_CONNECT_FAILED']))
    const rounds = new Map<number, number>()
    for (const at of h.factory.attempts) rounds.set(at, (rounds.get(at) ?? 0) + 1)
    const times = [...rounds.keys()]
    expect([...rounds.values()].every((n) => n <= 4)).toBe(true)
    let failures = 0
    for (let i = 1; i < times.length; i++) {
      failures += rounds.get(times[i - 1] as number) as number
      expect((times[i] as number) - (times[i - 1] as number), `round ${i}`).toBeGreaterThanOrEqual(
        retryDelay(failures, () => 0),
      )
    }
    // 40 clients for 3 s, yet only a few rounds: 0, 400 (4 failures), then every 1000 ms.
    expect(h.factory.attempts.length).toBeLessThanOrEqual(16)
  })

  test('end() leaves no timer behind after openings failed together', async () => {
    const h = poolHarness({ max: 3 }, (f) => {
      f.defaultPlan = { error: refused() }
    })
    for (let i = 0; i < 3; i++) h.pool.wait(new FakeHolder())
    await flush()
    await h.pool.end(0)
    expect(h.clock.dueIn()).toEqual([])
  })
})

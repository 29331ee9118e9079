import type { PoolStats } from '@fastify-pg-pool/core'
import { describe, expect, test } from 'vitest'
import { FakeClock } from '../../core/test/fake-clock.js'
import { Admission, HOLD_JITTER } from '../src/admission.js'
import { type PgPoolBackpressureOptions, resolveOptions } from '../src/options.js'
import { poolOptions, StaticView } from './simulated-pool.js'

/**
 * Admission's rules one at a time, on a view whose counts the test sets and a fake clock.
 * Defaults: target 40 ms, interval 100 ms, maxDelay 60 ms.
 */
function setup(
  pool: { max: number; maxWaiting?: number; retryAfter?: number },
  options: PgPoolBackpressureOptions = {},
  stats: Partial<PoolStats> = {},
  random: () => number = () => 0.5,
) {
  const clock = new FakeClock(0)
  const resolvedPool = poolOptions(pool)
  const view = new StaticView(resolvedPool, { waitingCap: resolvedPool.maxWaiting, ...stats })
  const admission = new Admission(view, resolveOptions({ process: false, ...options }), clock, random)
  return { clock, view, admission }
}

describe('the queue cap', () => {
  test('the core would refuse: queue_full at every priority, high included', () => {
    const { view, admission } = setup({ max: 1, maxWaiting: 3 }, {}, { waiting: 3 })
    expect(admission.check('high')).toBe('queue_full')
    expect(admission.check('normal')).toBe('queue_full')
    expect(admission.check('low')).toBe('queue_full')
    view.set({ waiting: 2 })
    expect(admission.check('high')).toBeUndefined()
    expect(admission.check('normal')).toBeUndefined()
  })

  test('a closing pool is no full queue: left to the core (FST_PG_POOL_CLOSED), nothing shed', () => {
    // Round ten of hostile probing: refused as queue_full (an overload alert during a rollout).
    const { admission } = setup({ max: 1, maxWaiting: 3 }, {}, { accepting: false })
    expect(admission.check('high')).toBeUndefined()
    expect(admission.check('low')).toBeUndefined()
  })

  test('a pipelined request that could join a shared connection is left to the core', () => {
    const { view, admission } = setup({ max: 1, maxWaiting: 0 }, {}, { waitingCap: 0, shared: 1, sharedQueries: 1 })
    view.sharedRoom = true
    expect(admission.check('normal')).toBeUndefined()
    view.sharedRoom = false
    expect(admission.check('normal')).toBe('queue_full')
  })
})

describe("the expected wait (Little's law)", () => {
  test('queued requests over max / mean hold time, against maxDelay; high priority only meets the cap', () => {
    const { view, admission } = setup({ max: 1 })
    admission.onRelease(50)
    view.set({ waiting: 1 })
    expect(admission.check('normal')).toBeUndefined()
    view.set({ waiting: 2 })
    expect(admission.check('normal')).toBe('queue_delay')
    expect(admission.check('high')).toBeUndefined()
  })

  test('more connections drain faster', () => {
    const { view, admission } = setup({ max: 2 })
    admission.onRelease(50)
    view.set({ waiting: 2 })
    expect(admission.check('normal')).toBeUndefined()
    view.set({ waiting: 3 })
    expect(admission.check('normal')).toBe('queue_delay')
  })

  test('nothing known of hold times: only the cap applies', () => {
    const { view, admission } = setup({ max: 1, maxWaiting: 100 }, {}, { waiting: 99 })
    expect(admission.check('normal')).toBeUndefined()
    view.set({ waiting: 100 })
    expect(admission.check('normal')).toBe('queue_full')
  })

  test('the observed rate of returns counts when faster than max / hold (connections shared by pipelined requests)', () => {
    const { clock, view, admission } = setup({ max: 1, maxWaiting: 100 }, {}, { waiting: 10 })
    // Ten 100 ms leases came back within 50 ms: ten per 50 ms, not one per 100 ms.
    for (let i = 0; i < 10; i++) admission.onRelease(100)
    clock.advance(50)
    expect(admission.check('normal')).toBeUndefined()
    view.set({ waiting: 13 })
    expect(admission.check('normal')).toBe('queue_delay')
  })

  test('the rate is trusted from 2 returns per connection on', () => {
    const one = setup({ max: 1 }, {}, { waiting: 2 })
    one.admission.onRelease(100)
    one.clock.advance(50)
    // One 100 ms return in 50 ms: max / hold (one per 100 ms) it is, 200 ms of work queued.
    expect(one.admission.check('normal')).toBe('queue_delay')
    const two = setup({ max: 1 }, {}, { waiting: 2 })
    two.admission.onRelease(100)
    two.admission.onRelease(100)
    two.clock.advance(50)
    // Two in 50 ms: one per 25 ms, 50 ms of work queued.
    expect(two.admission.check('normal')).toBeUndefined()
  })

  test('hold time spent in an event-loop stall is not counted', () => {
    const { view, admission } = setup({ max: 1 })
    admission.onRelease(230, 200)
    view.set({ waiting: 2 })
    expect(admission.check('normal')).toBeUndefined()
  })

  test('statements queued on shared connections count as queued work, though nobody waits for a connection', () => {
    const { view, admission } = setup({ max: 1 }, {}, { waiting: 0, shared: 1, sharedQueries: 1, pipelined: 3 })
    admission.onRelease(50)
    expect(admission.check('normal')).toBeUndefined()
    // One statement queued behind the one running: 50 ms ahead.
    view.set({ sharedQueries: 2 })
    expect(admission.check('normal')).toBeUndefined()
    view.set({ sharedQueries: 3 })
    expect(admission.check('normal')).toBe('queue_delay')
  })
})

describe('CoDel: a standing queue', () => {
  test('waits above target for a whole interval make the pool overloaded: requests are then held to target', () => {
    const { clock, view, admission } = setup({ max: 1 })
    admission.onRelease(30)
    // Two queued: 60 ms expected, within maxDelay; the oldest has waited 50 ms, above target.
    view.set({ waiting: 2, oldestWaitMs: 50 })
    expect(admission.check('normal')).toBeUndefined()
    clock.advance(99)
    expect(admission.check('normal')).toBeUndefined()
    expect(admission.overloaded).toBe(false)
    clock.advance(1)
    expect(admission.check('normal')).toBe('queue_delay')
    expect(admission.overloaded).toBe(true)
    // Within target is still admitted while overloaded.
    view.set({ waiting: 1 })
    expect(admission.check('normal')).toBeUndefined()
  })

  test('ends once a request got its connection within target and nothing was refused for an interval', () => {
    const { clock, view, admission } = setup({ max: 1 })
    admission.onRelease(30)
    view.set({ waiting: 2, oldestWaitMs: 50 })
    admission.check('normal')
    clock.advance(100)
    expect(admission.check('normal')).toBe('queue_delay')
    clock.advance(20)
    admission.onAcquire(10)
    view.set({ waiting: 1, oldestWaitMs: 10 })
    clock.advance(30)
    expect(admission.check('normal')).toBeUndefined()
    expect(admission.overloaded).toBe(true)
    clock.advance(51)
    expect(admission.check('normal')).toBeUndefined()
    expect(admission.overloaded).toBe(false)
    view.set({ waiting: 2 })
    expect(admission.check('normal')).toBeUndefined()
  })

  test('a queue that drains now and then (a busy but healthy pool) never trips it', () => {
    const { clock, view, admission } = setup({ max: 1 })
    admission.onRelease(30)
    view.set({ waiting: 2 })
    for (let i = 0; i < 20; i++) {
      view.set({ oldestWaitMs: 50 })
      admission.check('normal')
      clock.advance(60)
      // One request got its connection within target.
      admission.onAcquire(5)
      clock.advance(30)
      view.set({ oldestWaitMs: 45 })
      expect(admission.check('normal')).toBeUndefined()
    }
    expect(admission.overloaded).toBe(false)
  })

  test('a pipelined request queued behind statements on its shared connection counts that queue as its wait', () => {
    const { clock, admission } = setup({ max: 1 }, {}, { shared: 1, sharedQueries: 2 })
    admission.onRelease(50)
    // One statement queued behind another: 50 ms ahead, above target, within maxDelay.
    expect(admission.check('normal')).toBeUndefined()
    clock.advance(50)
    // It got its share at once, but waits behind that statement: no wait within target.
    admission.onAcquire(0)
    clock.advance(50)
    expect(admission.check('normal')).toBe('queue_delay')
    expect(admission.overloaded).toBe(true)
  })
})

describe('low priority', () => {
  test('refused at half the cap, or once the oldest waiter has waited past target, or when it would wait past target', () => {
    const { view, admission } = setup({ max: 1, maxWaiting: 10 })
    view.set({ waiting: 5 })
    expect(admission.check('low')).toBe('queue_full')
    expect(admission.check('normal')).toBeUndefined()
    view.set({ waiting: 1, oldestWaitMs: 41 })
    expect(admission.check('low')).toBe('queue_delay')
    view.set({ oldestWaitMs: 40 })
    expect(admission.check('low')).toBeUndefined()
    admission.onRelease(50)
    view.set({ oldestWaitMs: 0 })
    expect(admission.check('low')).toBe('queue_delay')
    expect(admission.check('normal')).toBeUndefined()
  })
})

describe('while connections are being opened', () => {
  test('a cold pool: only the caps apply (its first waits are connection setup)', () => {
    const { view, admission } = setup(
      { max: 4, maxWaiting: 100 },
      {},
      { connecting: 3, waiting: 50, oldestWaitMs: 500 },
    )
    admission.onRelease(500)
    expect(admission.check('normal')).toBeUndefined()
    expect(admission.check('high')).toBeUndefined()
    expect(admission.check('low')).toBe('queue_full')
    view.set({ waiting: 49 })
    expect(admission.check('low')).toBeUndefined()
  })

  test('a warm pool opening one more: work queued is held to maxDelay at the drain rate measured before', () => {
    const { clock, view, admission } = setup({ max: 4, maxWaiting: 100 })
    admission.onRelease(20)
    expect(admission.check('normal')).toBeUndefined()
    // 4 connections / 20 ms: one per 5 ms; maxDelay 60 ms is 12 queued.
    view.set({ connecting: 1, waiting: 12 })
    expect(admission.check('normal')).toBeUndefined()
    view.set({ waiting: 13 })
    expect(admission.check('normal')).toBe('queue_delay')
    // Low priority is held to target: 8 queued.
    view.set({ waiting: 9 })
    expect(admission.check('low')).toBe('queue_delay')
    view.set({ waiting: 8 })
    expect(admission.check('low')).toBeUndefined()
    // Settling lasts an interval after the last check that saw a connection opening.
    view.set({ connecting: 0, waiting: 13, oldestWaitMs: 0 })
    clock.advance(99)
    expect(admission.check('normal')).toBe('queue_delay')
    view.set({ waiting: 12 })
    clock.advance(1)
    expect(admission.check('normal')).toBeUndefined()
  })

  test('waits seen while settling do not count toward overload', () => {
    const { clock, view, admission } = setup({ max: 1 })
    admission.onRelease(30)
    admission.check('normal')
    view.set({ connecting: 1, waiting: 2, oldestWaitMs: 500 })
    for (let i = 0; i < 10; i++) {
      clock.advance(20)
      admission.check('normal')
    }
    view.set({ connecting: 0 })
    clock.advance(100)
    expect(admission.check('normal')).toBeUndefined()
    expect(admission.overloaded).toBe(false)
  })
})

describe('Retry-After', () => {
  test("seconds until the queue ahead has drained, within the bounds; the core's value while nothing is known", () => {
    const { view, admission } = setup({ max: 1, retryAfter: 7 }, { minRetryAfter: 2, maxRetryAfter: 5 })
    expect(admission.retryAfter()).toBe(5)
    admission.onRelease(200)
    // 11 ahead and this one, one per 200 ms: 2.4 s.
    view.set({ waiting: 11 })
    expect(admission.retryAfter()).toBe(3)
    // Statements queued on shared connections are ahead too.
    view.set({ shared: 1, sharedQueries: 6 })
    expect(admission.retryAfter()).toBe(4)
    view.set({ waiting: 100 })
    expect(admission.retryAfter()).toBe(5)
    view.set({ waiting: 0, sharedQueries: 0 })
    expect(admission.retryAfter()).toBe(2)
  })
})

describe('retry storms', () => {
  /** Refusals at the cap, `count` of them, now. */
  function refuse(admission: Admission, count: number): void {
    for (let i = 0; i < count; i++) expect(admission.check('normal')).toBe('queue_full')
  }

  test('refusals arriving more than factor × the drain rate are held back retryStorm.delay, jittered', () => {
    const randoms = [0, 0.999_999, 0.5]
    const { clock, admission } = setup(
      { max: 1, maxWaiting: 0 },
      { retryStorm: { factor: 10, delay: 100 } },
      { waitingCap: 0 },
      () => randoms.shift() ?? 0.5,
    )
    admission.onRelease(50)
    refuse(admission, 30)
    // Nothing known of the refusal rate yet (no completed half-interval).
    expect(admission.refusalDelay()).toBe(0)
    clock.advance(50)
    // 30 refusals in 50 ms against one lease per 50 ms: 30 times the drain rate.
    expect(admission.refusalDelay()).toBe(100 * (1 - HOLD_JITTER))
    expect(admission.refusalDelay()).toBeCloseTo(100 * (1 + HOLD_JITTER), 3)
    expect(admission.refusalDelay()).toBe(100)
  })

  test('a storm lasts at least one delay, then ends when refusals fall below half the factor', () => {
    const { clock, admission } = setup(
      { max: 1, maxWaiting: 0 },
      { retryStorm: { factor: 10, delay: 100 } },
      { waitingCap: 0 },
    )
    admission.onRelease(50)
    refuse(admission, 30)
    clock.advance(50)
    expect(admission.refusalDelay()).toBe(100)
    // No refusal since, but within the first delay: still a storm.
    clock.advance(99)
    expect(admission.refusalDelay()).toBe(100)
    // 12 in the last 100 ms, 6 times the drain rate: no new storm would start (factor 10), but
    // one goes on while above half of it.
    refuse(admission, 12)
    clock.advance(1)
    expect(admission.refusalDelay()).toBe(100)
    clock.advance(50)
    refuse(admission, 4)
    clock.advance(50)
    // 4 in the last 100 ms: below half the factor.
    expect(admission.refusalDelay()).toBe(0)
  })

  test('slower refusals are no storm', () => {
    const { clock, admission } = setup(
      { max: 1, maxWaiting: 0 },
      { retryStorm: { factor: 10, delay: 100 } },
      { waitingCap: 0 },
    )
    admission.onRelease(50)
    refuse(admission, 10)
    clock.advance(50)
    expect(admission.refusalDelay()).toBe(0)
  })

  test('retryStorm: false never holds a refusal back', () => {
    const { clock, admission } = setup({ max: 1, maxWaiting: 0 }, { retryStorm: false }, { waitingCap: 0 })
    admission.onRelease(50)
    refuse(admission, 1_000)
    clock.advance(50)
    expect(admission.refusalDelay()).toBe(0)
  })
})

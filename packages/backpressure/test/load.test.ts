import { describe, expect, test } from 'vitest'
import { FakeClock, flush } from '../../core/test/fake-clock.js'
import type { PgPoolBackpressureOptions } from '../src/options.js'
import { type Answer, closedLoop, drive, Gate, type Route, sleep } from './gate.js'
import { poolOptions, SimulatedPool, type SimulatedPoolSettings } from './simulated-pool.js'

/**
 * The closed-loop scenarios of admission control, on a simulated pool and a fake clock: the same
 * loads and assertions as the real-server tests they replace (test/backpressure), without their
 * dependence on the machine's speed.
 */

interface Sim {
  readonly clock: FakeClock
  readonly pool: SimulatedPool
  readonly gate: Gate
}

function sim(
  pool: Partial<SimulatedPoolSettings['options']> & { max: number },
  backpressure: PgPoolBackpressureOptions = {},
  settings: Omit<SimulatedPoolSettings, 'options'> & { stallClock?: boolean } = {},
): Sim {
  const clock = new FakeClock(0)
  const simulated = new SimulatedPool(clock, { ...settings, options: poolOptions(pool) })
  const gate = new Gate(clock, simulated, backpressure, { stallClock: settings.stallClock ?? true })
  return { clock, pool: simulated, gate }
}

const hold = (ms: number): Route => ({ url: '/hold/:ms', holdMs: ms })
const shared = (ms: number): Route => ({ url: '/shared/:ms', holdMs: ms, pipelined: true })
const low = (ms: number): Route => ({ url: '/low/:ms', holdMs: ms, priority: 'low' })
const high = (ms: number): Route => ({ url: '/high/:ms', holdMs: ms, priority: 'high' })

function tally(answers: Answer[]): Map<number, number> {
  const counts = new Map<number, number>()
  for (const { status } of answers) counts.set(status, (counts.get(status) ?? 0) + 1)
  return counts
}

/** Runs `route` in a closed loop and collects every answer. */
async function load(
  s: Sim,
  route: Route,
  clients: number,
  durationMs: number,
  options?: { pauseOn503Ms?: number; rttMs?: number },
) {
  const answers: Answer[] = []
  await drive(
    s.clock,
    closedLoop(s.clock, s.gate, route, clients, durationMs, (answer) => answers.push(answer), options),
  )
  return answers
}

/** Sends `route` once, `afterMs` from now; the answer, once the clock has been driven past it. */
function later(s: Sim, route: Route, afterMs = 0): Promise<Answer> {
  return sleep(s.clock, afterMs).then(() => s.gate.request(route))
}

describe('maxWaiting 0 (no queue)', () => {
  test('refused at the door once every connection is leased; a cold pool opens max connections for a burst, low priority included', async () => {
    const s = sim({ max: 3, maxWaiting: 0 }, {}, { warm: 0, connectMs: () => 20 })
    const held = [s.gate.request(hold(300))]
    await flush()
    expect(s.pool.stats()).toMatchObject({ waiting: 1, connecting: 1 })
    // Low priority gets half the cap: here half the connections the pool can still open.
    held.push(s.gate.request(low(300)))
    await flush()
    expect(s.pool.stats().waiting + s.pool.stats().leased).toBe(2)
    held.push(s.gate.request(hold(300)))
    await s.clock.advanceAsync(50)
    expect(s.pool.stats()).toMatchObject({ leased: 3, waiting: 0 })
    const refused = await s.gate.request(hold(1))
    expect(refused).toMatchObject({ status: 503, code: 'FST_PG_POOL_QUEUE_FULL' })
    expect(refused.retryAfter).toBeGreaterThanOrEqual(1)
    expect((await s.gate.request(high(1))).status).toBe(503)
    expect((await drive(s.clock, Promise.all(held))).map((a) => a.status)).toEqual([200, 200, 200])
    expect(s.gate.shed).toEqual([
      { reason: 'queue_full', route: '/hold/:ms' },
      { reason: 'queue_full', route: '/high/:ms' },
    ])
    expect(s.pool.stats().leased).toBe(0)
    expect((await drive(s.clock, s.gate.request(low(1)))).status).toBe(200)
  })

  test('pipelined requests join a shared connection with room instead of being refused', async () => {
    const s = sim({ max: 1, maxWaiting: 0, pipelineDepth: 4 })
    const sharing: Promise<Answer>[] = []
    for (let i = 1; i <= 4; i++) {
      sharing.push(s.gate.request(shared(300)))
      await s.clock.advanceAsync(1)
      expect(s.pool.stats()).toMatchObject({ pipelined: i, leased: 1, waiting: 0 })
    }
    // The connection is full (depth 4): the next pipelined request and an exclusive one are refused.
    expect((await s.gate.request(shared(1))).status).toBe(503)
    expect((await s.gate.request(hold(1))).status).toBe(503)
    expect((await drive(s.clock, Promise.all(sharing))).map((a) => a.status)).toEqual([200, 200, 200, 200])
    expect(s.gate.shed.map((x) => x.reason)).toEqual(['queue_full', 'queue_full'])
  })
})

describe('queueing delay', () => {
  test('a standing queue is shed with FST_PG_POOL_OVERLOADED, and admission clears once it drains', async () => {
    // maxWaiting far above the load: every refusal here comes from the delay rule.
    const s = sim({ max: 1, maxWaiting: 200 })
    const answers = await load(s, hold(50), 30, 1_500)
    const counts = tally(answers)
    expect(counts.get(503)).toBeGreaterThan(0)
    expect(counts.get(200)).toBeGreaterThan(0)
    expect([...counts.keys()].sort()).toEqual([200, 503])
    expect(new Set(answers.filter((a) => a.status === 503).map((a) => a.code))).toEqual(
      new Set(['FST_PG_POOL_OVERLOADED']),
    )
    expect(new Set(s.gate.shed.map((x) => x.reason))).toEqual(new Set(['queue_delay']))

    // Drained: the next request is admitted at once.
    expect(s.pool.stats()).toMatchObject({ waiting: 0, leased: 0 })
    expect((await drive(s.clock, s.gate.request(hold(1)))).status).toBe(200)
    // Fast again for a while, a small queue is accepted again.
    const until = s.clock.now() + 300
    while (s.clock.now() < until) expect((await drive(s.clock, s.gate.request(hold(1)))).status).toBe(200)
    const before = s.gate.shed.length
    const burst = await drive(s.clock, Promise.all([40, 1, 1].map((ms, i) => later(s, hold(ms), i * 10))))
    expect(burst.map((a) => a.status)).toEqual([200, 200, 200])
    expect(s.gate.shed.length).toBe(before)
  })

  test('CoDel: a burst within maxDelay is absorbed; once waits stand above target for an interval, requests are held to target', async () => {
    // maxDelay above anything this load queues: every refusal here comes from the standing-queue state.
    const s = sim({ max: 1, maxWaiting: 200 }, { target: 20, interval: 100, maxDelay: 2_000 })
    const started = s.clock.now()
    let firstShed = 0
    s.gate.onRefusal(() => {
      firstShed ||= s.clock.now() - started
    })
    const answers = await load(s, hold(50), 10, 1_000)
    expect(tally(answers).get(503)).toBeGreaterThan(0)
    expect(new Set(s.gate.shed.map((x) => x.reason))).toEqual(new Set(['queue_delay']))
    // Nothing was refused before waits had stood above target for a whole interval.
    expect(firstShed).toBeGreaterThanOrEqual(120)
  })

  test('low priority is refused while normal and high priority are still queued', async () => {
    // maxDelay far above the queue: normal requests are only refused at the cap here.
    const s = sim({ max: 1, maxWaiting: 20 }, { maxDelay: 5_000 })
    const admitted = Array.from({ length: 4 }, () => s.gate.request(hold(200)))
    await s.clock.advanceAsync(61)
    expect(s.pool.stats()).toMatchObject({ waiting: 3 })
    expect(s.pool.stats().oldestWaitMs).toBeGreaterThan(60)
    const refused = await s.gate.request(low(1))
    expect(refused).toMatchObject({ status: 503, code: 'FST_PG_POOL_OVERLOADED' })
    const [normal, highAnswer] = await drive(s.clock, Promise.all([s.gate.request(hold(1)), s.gate.request(high(1))]))
    expect(normal?.status).toBe(200)
    expect(highAnswer?.status).toBe(200)
    expect((await drive(s.clock, Promise.all(admitted))).map((a) => a.status)).toEqual([200, 200, 200, 200])
    expect(s.gate.shed).toEqual([{ reason: 'queue_delay', route: '/low/:ms' }])
  })

  test('a busy but healthy pool (max 5, 10 clients, short queries) is never refused', async () => {
    const s = sim({ max: 5 })
    let waited = 0
    s.pool.on('acquire', (waitMs) => {
      if (waitMs > 0) waited++
    })
    const answers = await load(s, hold(1), 10, 1_500)
    expect([...tally(answers).keys()]).toEqual([200])
    expect(tally(answers).get(200)).toBeGreaterThan(200)
    // The pool was really busy: requests did queue for a connection.
    expect(waited).toBeGreaterThan(0)
    expect(s.gate.shed).toEqual([])
  })
})

describe('event-loop stalls', () => {
  /** 15 clients on 5 connections held 10 ms each, warmed up, then stalled 200 ms every 500 ms. */
  async function stalledLoad(s: Sim) {
    await load(s, hold(10), 15, 500)
    s.gate.shed.length = 0
    let stalls = 0
    const stallEvery = () => {
      // A synchronous stall, as a long GC pause or a CPU-heavy handler elsewhere in the app makes:
      // the leases in flight are held through it, but the pool drains as fast as before after it.
      // An interval: the next one is due 500 ms after this one began.
      stalls++
      timer = s.clock.setTimeout(stallEvery, 500)
      s.clock.stall(200)
    }
    let timer = s.clock.setTimeout(stallEvery, 500)
    const answers = await load(s, hold(10), 15, 2_300)
    s.clock.clearTimeout(timer)
    return { answers, stalls }
  }

  test('a healthy load is not refused because the process stalled (200 ms every 500 ms)', async () => {
    const s = sim({ max: 5 })
    const { answers, stalls } = await stalledLoad(s)
    expect(stalls).toBeGreaterThanOrEqual(4)
    expect(s.gate.shed).toEqual([])
    expect([...tally(answers).keys()]).toEqual([200])
  })

  test('without the stall clock, the same load is refused: counted as hold time, the stalls read as a pool four times slower', async () => {
    const s = sim({ max: 5 }, {}, { stallClock: false })
    const { stalls } = await stalledLoad(s)
    expect(stalls).toBeGreaterThanOrEqual(4)
    expect(s.gate.shed.length).toBeGreaterThan(0)
  })
})

describe('pipelined routes', () => {
  test('requests queued on shared connections count as queueing delay: shed although nobody waits for a connection', async () => {
    const s = sim({ max: 1, pipelineDepth: 20, maxWaiting: 200 })
    // Admission learns the hold time (~50 ms) from a few requests.
    for (let i = 0; i < 4; i++) expect((await drive(s.clock, s.gate.request(shared(50)))).status).toBe(200)
    // Four requests share the one connection, three of them queued behind the first.
    const sharing = Array.from({ length: 4 }, () => s.gate.request(shared(200)))
    await s.clock.advanceAsync(1)
    expect(s.pool.stats()).toMatchObject({ pipelined: 4, waiting: 0, shared: 1 })
    // Nobody waits for a connection, but three statements of ~50 ms are ahead: above maxDelay.
    const refused = await s.gate.request(shared(1))
    expect(refused).toMatchObject({ status: 503, code: 'FST_PG_POOL_OVERLOADED' })
    expect(refused.retryAfter).toBeGreaterThanOrEqual(1)
    expect(s.gate.shed).toEqual([{ reason: 'queue_delay', route: '/shared/:ms' }])
    expect((await drive(s.clock, Promise.all(sharing))).map((a) => a.status)).toEqual([200, 200, 200, 200])
    expect((await drive(s.clock, s.gate.request(shared(1)))).status).toBe(200)
  })

  test('a busy but healthy pipelined pool (max 2, 20 clients, short queries) is never refused', async () => {
    const s = sim({ max: 2 })
    let mostPipelined = 0
    s.pool.on('acquire', () => {
      mostPipelined = Math.max(mostPipelined, s.pool.stats().pipelined)
    })
    await load(s, shared(1), 20, 500)
    s.gate.shed.length = 0
    const answers = await load(s, shared(1), 20, 1_500)
    expect([...tally(answers).keys()]).toEqual([200])
    expect(tally(answers).get(200)).toBeGreaterThan(200)
    // Connections really were shared.
    expect(mostPipelined).toBeGreaterThan(2)
    expect(s.gate.shed).toEqual([])
  })
})

describe('cold pool', () => {
  test('a burst that meets the pool still opening its connections is not refused; once they are open, an overload is', async () => {
    // The connection register opens is set up at once; every later one takes 250 ms (a busy
    // server forking backends, a pooler logging in).
    const s = sim({ max: 4 }, {}, { connectMs: () => 250 })
    let mostConnecting = 0
    s.pool.on('acquire', () => {
      mostConnecting = Math.max(mostConnecting, s.pool.stats().connecting)
    })
    // 12 clients on 4 connections is a healthy load, but the 3 connections the pool opens for
    // it take 250 ms: meanwhile the pipelined requests share the one open connection and
    // queue far longer than target behind each other.
    const answers = await load(s, shared(10), 12, 700)
    expect([...tally(answers).keys()]).toEqual([200])
    expect(s.gate.shed).toEqual([])
    expect(mostConnecting).toBeGreaterThan(0)
    expect(s.pool.opened).toBeGreaterThanOrEqual(3)

    // Once every connection is open and an interval has passed, the delay signals are back.
    expect(s.pool.stats()).toMatchObject({ open: 4, connecting: 0 })
    await s.clock.advanceAsync(150)
    // 20 requests queue (4 × 100 ms ahead of the last of them); 20 more then meet that queue.
    const queued = Array.from({ length: 20 }, () => s.gate.request(hold(100)))
    await flush()
    expect(s.pool.stats().waiting).toBe(16)
    const burst = await drive(
      s.clock,
      Promise.all([...queued, ...Array.from({ length: 20 }, () => s.gate.request(hold(100)))]),
    )
    const refused = burst.filter((a) => a.status === 503)
    expect(refused.length).toBeGreaterThan(0)
    expect(refused.every((a) => a.code === 'FST_PG_POOL_OVERLOADED')).toBe(true)
    expect(s.gate.shed.every((x) => x.reason === 'queue_delay')).toBe(true)
  })
})

describe('a warm pool opening a connection', () => {
  test('an overload that makes it open one more connection is held to maxDelay of work meanwhile, not queued to the cap', async () => {
    // The first three connections open at once, the fourth takes 400 ms.
    const s = sim({ max: 4, maxWaiting: 100 }, {}, { connectMs: (index) => (index < 3 ? 0 : 400) })
    const connectingAtRefusal: number[] = []
    s.gate.onRefusal(() => connectingAtRefusal.push(s.pool.stats().connecting))
    // A steady load on three connections: the pool knows its hold time (20 ms).
    const steady = closedLoop(s.clock, s.gate, hold(20), 3, 900, () => {})
    await s.clock.advanceAsync(400)
    expect(s.pool.stats().open).toBe(3)
    expect(s.gate.shed).toEqual([])
    // 60 more, one per millisecond: 4 connections drain one per 5 ms, so maxDelay (60 ms) is
    // 12 queued.
    let mostWaiting = 0
    s.pool.on('acquire', () => {
      mostWaiting = Math.max(mostWaiting, s.pool.stats().waiting)
    })
    const burst = Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        later(s, hold(20), i).then((answer) => {
          mostWaiting = Math.max(mostWaiting, s.pool.stats().waiting)
          return answer
        }),
      ),
    )
    const answers = await drive(s.clock, burst)
    await drive(s.clock, steady)
    const refused = answers.filter((a) => a.status === 503)
    expect(answers.filter((a) => a.status === 200).length + refused.length).toBe(60)
    expect(refused.length).toBeGreaterThan(30)
    expect(refused.every((a) => a.code === 'FST_PG_POOL_OVERLOADED')).toBe(true)
    expect(s.gate.shed.every((x) => x.reason === 'queue_delay')).toBe(true)
    // Refused while the fourth connection was being opened (the settling period).
    expect(connectingAtRefusal.length).toBeGreaterThan(0)
    expect(connectingAtRefusal.every((n) => n === 1)).toBe(true)
    expect(mostWaiting).toBeLessThanOrEqual(16)
    expect(s.pool.opened).toBe(4)
  })
})

describe('retry storm', () => {
  /** Clients that retry at once on 503; every refusal with when it was sent (ms since the storm began). */
  async function storm(s: Sim, clients: number, durationMs: number): Promise<{ at: number; ms: number }[]> {
    const refusals: { at: number; ms: number }[] = []
    const begun = s.clock.now()
    await drive(
      s.clock,
      closedLoop(
        s.clock,
        s.gate,
        hold(50),
        clients,
        durationMs,
        (answer, sentAt) => {
          if (answer.status === 503) refusals.push({ at: sentAt - begun, ms: answer.latency })
        },
        { pauseOn503Ms: 0 },
      ),
    )
    return refusals
  }

  test('refusals are held back while clients retry much faster than the pool drains', async () => {
    const s = sim({ max: 1, maxWaiting: 200 }, { retryStorm: { factor: 10, delay: 100 } })
    const refusals = await storm(s, 30, 1_000)
    expect(refusals.length).toBeGreaterThan(0)
    // Held refusals wait 0.5 to 1.5 × the delay (jittered, so that they do not come back together).
    const isHeld = (r: { ms: number }) => r.ms >= 45
    // The storm is seen within its first interval or two; from then on a large part of the
    // refusals wait the delay. The point is the volume: 30 clients make a few hundred refusals a
    // second instead of the thousands they make unheld (next test: over 500 in half a second).
    const later = refusals.filter((r) => r.at >= 250)
    expect(later.length).toBeGreaterThan(0)
    expect(later.filter(isHeld).length).toBeGreaterThanOrEqual(0.4 * later.length)
    expect(refusals.length).toBeLessThan(400)
    expect(Math.max(...refusals.map((r) => r.ms))).toBeGreaterThan(100)
    // Every hold lies within the jitter.
    for (const { ms } of refusals.filter(isHeld)) {
      expect(ms).toBeGreaterThanOrEqual(50)
      expect(ms).toBeLessThan(150)
    }
  })

  test('retryStorm: false answers every refusal at once', async () => {
    const s = sim({ max: 1, maxWaiting: 200 }, { retryStorm: false })
    const refusals = await storm(s, 30, 500)
    expect(refusals.length).toBeGreaterThan(500)
    // Nothing is held.
    expect(refusals.filter((r) => r.ms >= 95)).toEqual([])
    expect(new Set(refusals.map((r) => r.ms))).toEqual(new Set([0]))
  })
})

describe('Retry-After', () => {
  /** Saturates the pool and reads the Retry-After of its refusals. */
  async function retryAfterAtCap(s: Sim, holdMs: number): Promise<number[]> {
    const { maxWaiting, max } = s.pool.options
    const values: number[] = []
    await drive(
      s.clock,
      closedLoop(s.clock, s.gate, hold(holdMs), max + maxWaiting + 4, 1_200, (answer) => {
        if (answer.status === 503) values.push(answer.retryAfter as number)
      }),
    )
    return values
  }

  test('follows the drain rate, within the configured bounds', async () => {
    const options = { minRetryAfter: 1, maxRetryAfter: 3, retryStorm: false } as const
    const slow = sim({ max: 1, maxWaiting: 10 }, options)
    const fast = sim({ max: 2, maxWaiting: 10 }, options)
    // slow drains ~5 requests/s: 11 ahead of a new request take ~2.2 s; fast drains ~200/s.
    const slowValues = await retryAfterAtCap(slow, 200)
    const fastValues = await retryAfterAtCap(fast, 10)
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
})

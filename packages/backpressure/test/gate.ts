import type { FakeClock } from '../../core/test/fake-clock.js'
import { Admission, type PoolRefusal } from '../src/admission.js'
import { type PgPoolBackpressureOptions, type Priority, resolveOptions } from '../src/options.js'
import { StallClock } from '../src/stall-clock.js'
import type { SimulatedPool } from './simulated-pool.js'

/** A route the load asks for: `holdMs` of statement time; `priority: null` is exempt. */
export interface Route {
  readonly url: string
  readonly holdMs: number
  readonly priority?: Priority | null
  readonly pipelined?: boolean
}

export interface Answer {
  readonly status: 200 | 503
  /** The body's code of a 503. */
  readonly code?: string
  readonly retryAfter?: number
  /** From the request's arrival to its answer, ms (a held refusal waits its delay). */
  readonly latency: number
}

/** What plugin.ts answers for each refusal (its bodies). */
const refusalCodes: Record<PoolRefusal, string> = {
  queue_full: 'FST_PG_POOL_QUEUE_FULL',
  queue_delay: 'FST_PG_POOL_OVERLOADED',
}

/** A small seeded PRNG (mulberry32): the same jitter on every run. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

/**
 * Admission control wired to a simulated pool as plugin.ts wires it to the real view: the stall
 * clock woken on each acquire, stall time taken out of each release, the check at the door, the
 * refusal held back during a retry storm, and the computed Retry-After on refusals and on the
 * core's own queue refusals (its onError hook).
 */
export class Gate {
  readonly admission: Admission
  /** Every refusal at the door, as published on the refusal channel. */
  readonly shed: { reason: PoolRefusal; route: string }[] = []
  readonly #clock: FakeClock
  readonly #pool: SimulatedPool
  readonly #refusalListeners: ((reason: PoolRefusal) => void)[] = []

  constructor(
    clock: FakeClock,
    pool: SimulatedPool,
    options: PgPoolBackpressureOptions = {},
    { stallClock = true, random = seeded(1) }: { stallClock?: boolean; random?: () => number } = {},
  ) {
    this.#clock = clock
    this.#pool = pool
    const resolved = resolveOptions({ process: false, ...options })
    this.admission = new Admission(pool, resolved, clock, random)
    const stalls = new StallClock(clock, () => {
      const stats = pool.stats()
      return stats.leased > 0 || stats.waiting > 0
    })
    pool.on('acquire', (waitMs) => {
      stalls.wake()
      this.admission.onAcquire(waitMs)
    })
    pool.on('release', (heldMs) => {
      const now = clock.now()
      this.admission.onRelease(heldMs, stallClock ? stalls.within(now - heldMs, now) : 0)
    })
  }

  onRefusal(listener: (reason: PoolRefusal) => void): void {
    this.#refusalListeners.push(listener)
  }

  async request(route: Route): Promise<Answer> {
    const arrived = this.#clock.now()
    const priority = route.priority === undefined ? 'normal' : route.priority
    if (priority !== null) {
      const refusal = this.admission.check(priority)
      if (refusal !== undefined) {
        this.shed.push({ reason: refusal, route: route.url })
        for (const listener of this.#refusalListeners) listener(refusal)
        const delay = this.admission.refusalDelay()
        const retryAfter = this.admission.retryAfter()
        if (delay > 0) await new Promise((resolve) => this.#clock.setTimeout(() => resolve(undefined), delay))
        return { status: 503, code: refusalCodes[refusal], retryAfter, latency: this.#clock.now() - arrived }
      }
    }
    // The handler runs after the door, as in Fastify: requests that arrive together all pass the
    // check before any of them reaches the pool.
    await Promise.resolve()
    const outcome = await this.#pool.run(route.holdMs, route.pipelined === true)
    if (outcome !== 'ok') {
      return {
        status: 503,
        code: outcome,
        retryAfter: this.admission.retryAfter(),
        latency: this.#clock.now() - arrived,
      }
    }
    return { status: 200, latency: this.#clock.now() - arrived }
  }
}

export function sleep(clock: FakeClock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, ms))
}

/** Advances the clock until `work` settles (at most `limitMs`); resolves with its value. */
export async function drive<T>(clock: FakeClock, work: Promise<T>, limitMs = 120_000): Promise<T> {
  let settled = false
  void work.then(
    () => {
      settled = true
    },
    () => {
      settled = true
    },
  )
  const until = clock.now() + limitMs
  while (!settled) {
    if (clock.now() >= until) throw new Error(`not settled within ${limitMs} ms of fake time`)
    await clock.advanceAsync(5)
  }
  return work
}

/**
 * Closed-loop clients, as test/backpressure's: each sends `route` again as soon as its previous
 * request was answered (after `rttMs` to reach the server, and a pause after a 503), until
 * `durationMs` has passed.
 */
export async function closedLoop(
  clock: FakeClock,
  gate: Gate,
  route: Route,
  clients: number,
  durationMs: number,
  onAnswer: (answer: Answer, sentAt: number) => void,
  { pauseOn503Ms = 5, rttMs = 1 }: { pauseOn503Ms?: number; rttMs?: number } = {},
): Promise<void> {
  const until = clock.now() + durationMs
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (clock.now() < until) {
        await sleep(clock, rttMs)
        const sentAt = clock.now()
        const answer = await gate.request(route)
        onAnswer(answer, sentAt)
        if (answer.status === 503 && pauseOn503Ms > 0) await sleep(clock, pauseOn503Ms)
      }
    }),
  )
}

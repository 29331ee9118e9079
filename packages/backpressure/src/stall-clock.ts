import type { Clock } from '@fastify-pg-pool/core'

const PERIOD_MS = 10
/** Lateness below this is timer jitter and ordinary event-loop turns, not a stall. */
const MIN_STALL_MS = 5
/** Stalls remembered: far more than happen within a lease's hold. */
const KEEP = 32

/**
 * When the event loop stalled (a long GC pause, a CPU-heavy callback, the process descheduled),
 * seen as a 10 ms timer firing late. A lease in flight during a stall is held through it, but the
 * pool drains as fast as before once the process runs again: admission takes stall time out of
 * hold times, so one stall does not read as a pool that got several times slower (it refused a
 * healthy load through every GC pause).
 *
 * The timer runs only while `busy()` says the pool has work, started again by `wake()`: an idle
 * service is not woken 100 times a second, and V8 can see it idle (its memory reducer does).
 */
export class StallClock {
  readonly #clock: Clock
  readonly #busy: () => boolean
  #timer: ReturnType<Clock['setTimeout']> | undefined
  #lastTick = 0
  /** Ring of the last stalls, [start, end] in the clock's ms. */
  readonly #starts = new Float64Array(KEEP)
  readonly #ends = new Float64Array(KEEP)
  #next = 0
  #count = 0
  #stopped = false

  constructor(clock: Clock, busy: () => boolean) {
    this.#clock = clock
    this.#busy = busy
  }

  /** Starts the timer if it is not running (the pool got work). */
  wake(now = this.#clock.now()): void {
    if (this.#timer !== undefined || this.#stopped) return
    this.#lastTick = now
    this.#timer = this.#clock.setTimeout(this.#tick, PERIOD_MS)
  }

  // Re-armed from each tick, as an interval would be: lateness is measured from the last tick.
  readonly #tick = (): void => {
    const now = this.#clock.now()
    const due = this.#lastTick + PERIOD_MS
    if (now - due > MIN_STALL_MS) {
      this.#starts[this.#next] = due
      this.#ends[this.#next] = now
      this.#next = (this.#next + 1) % KEEP
      this.#count = Math.min(KEEP, this.#count + 1)
    }
    this.#lastTick = now
    this.#timer = this.#busy() ? this.#clock.setTimeout(this.#tick, PERIOD_MS) : undefined
  }

  /**
   * How much of [since, now] the event loop was stalled, ms. Includes a stall that has just ended
   * and whose timer has not run yet: callbacks queued behind it (connections returned during it)
   * run before the timers of the next turn.
   */
  within(since: number, now: number): number {
    let stalled = 0
    const due = this.#lastTick + PERIOD_MS
    if (this.#timer !== undefined && now - due > MIN_STALL_MS) stalled += now - Math.max(due, since)
    for (let i = 1; i <= this.#count; i++) {
      const at = (this.#next - i + KEEP) % KEEP
      const end = this.#ends[at] as number
      if (end <= since) break
      stalled += end - Math.max(this.#starts[at] as number, since)
    }
    return Math.min(stalled, now - since)
  }

  stop(): void {
    this.#stopped = true
    this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
  }
}

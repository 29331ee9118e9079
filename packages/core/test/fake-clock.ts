import type { Clock, TimerHandle } from '../src/clock.js'

interface Timer {
  readonly fn: () => void
  readonly due: number
  /** Creation order: timers due at the same time run in the order they were set. */
  readonly seq: number
}

/**
 * A clock that moves only when told: `advance(ms)` runs every timer that falls due within the
 * step, in order of due time (then of creation), with `now()` at each timer's due time, including
 * timers that timers set. No real time is involved anywhere.
 */
export class FakeClock implements Clock {
  #now: number
  #seq = 0
  readonly #timers = new Map<TimerHandle, Timer>()
  /** Timers ever set (a count of allocations, for "one timer for the whole queue"). */
  created = 0

  constructor(start = 1_000) {
    this.#now = start
  }

  now(): number {
    return this.#now
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const handle = {}
    this.created++
    this.#timers.set(handle, { fn, due: this.#now + Math.max(0, ms), seq: this.#seq++ })
    return handle
  }

  clearTimeout(handle: TimerHandle | undefined): void {
    if (handle !== undefined) this.#timers.delete(handle)
  }

  /** Timers set and not yet run or cleared. */
  get pending(): number {
    return this.#timers.size
  }

  /** Due times of the pending timers, relative to now, soonest first. */
  dueIn(): number[] {
    return [...this.#timers.values()].map((t) => t.due - this.#now).sort((a, b) => a - b)
  }

  /** Moves time forward by `ms`, running every timer due by then (late ones at the current time). */
  advance(ms: number): void {
    const target = this.#now + ms
    for (let next = this.#next(target); next !== undefined; next = this.#next(target)) {
      this.#timers.delete(next[0])
      this.#now = Math.max(this.#now, next[1].due)
      next[1].fn()
    }
    // A timer may have stalled the clock past the target.
    this.#now = Math.max(this.#now, target)
  }

  /**
   * Like `advance`, but lets promise callbacks run after each timer (and before returning): what
   * a timer starts (a connection opening, a lease finishing) completes before the next one runs.
   */
  async advanceAsync(ms: number): Promise<void> {
    const target = this.#now + ms
    await flush()
    for (let next = this.#next(target); next !== undefined; next = this.#next(target)) {
      this.#timers.delete(next[0])
      this.#now = Math.max(this.#now, next[1].due)
      next[1].fn()
      await flush()
    }
    this.#now = Math.max(this.#now, target)
    await flush()
  }

  /**
   * Moves time forward without running any timer: the process was stalled (a GC pause, a
   * CPU-heavy callback). Timers that fell due run late: at the next `advance`, or, when a timer
   * stalls, right after it within the same step.
   */
  stall(ms: number): void {
    this.#now += ms
  }

  #next(target: number): [TimerHandle, Timer] | undefined {
    let best: [TimerHandle, Timer] | undefined
    for (const entry of this.#timers) {
      const timer = entry[1]
      if (timer.due > target) continue
      if (best === undefined || timer.due < best[1].due || (timer.due === best[1].due && timer.seq < best[1].seq)) {
        best = entry
      }
    }
    return best
  }
}

/** Lets every pending promise callback run (no timer, no real time: one macrotask turn). */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

import type { PgPoolView, PoolStats } from '@fastify-pg-pool/core'
import type { Priority } from './options.js'

export type PoolRefusal = 'queue_full' | 'queue_delay'

export interface AdmissionSettings {
  readonly target: number
  readonly interval: number
  readonly retryAfter: { readonly min: number; readonly max: number }
}

/** Weight of the newest window in the drain-rate average. */
const RATE_WEIGHT = 0.3

/**
 * The pool-pressure decision: a CoDel-style detector of a standing queue plus the hard cap.
 *
 * Every `interval` (rolled lazily by the next request, no timer) the smallest acquire wait of
 * the window is compared with `target`. A queue that drains now and then (a busy but healthy
 * pool) has a small minimum however long its peaks; only a queue that never drained for a
 * whole interval has a minimum above target. Once overloaded, a request is admitted only while
 * the queue ahead of it drains within `target` at the observed drain rate, so admitted work
 * stays fast and the connections stay busy. The state clears after an interval in which
 * nothing had to be refused; and whatever the state, a request that finds nobody waiting is
 * admitted (it waits for one lease at most).
 */
export class Admission {
  readonly #view: PgPoolView
  readonly #settings: AdmissionSettings
  #windowStart: number
  #windowMin = Number.POSITIVE_INFINITY
  #acquires = 0
  #queued = false
  #releases = 0
  #refused = false
  #overloaded = false
  /** Releases per ms while requests were waiting (the queue's drain rate); undefined until seen. */
  #rate: number | undefined

  constructor(view: PgPoolView, settings: AdmissionSettings, now: number) {
    this.#view = view
    this.#settings = settings
    this.#windowStart = now
  }

  readonly onAcquire = (waitMs: number): void => {
    this.#acquires++
    if (waitMs < this.#windowMin) this.#windowMin = waitMs
    if (waitMs > 0) this.#queued = true
  }

  readonly onRelease = (): void => {
    this.#releases++
  }

  get overloaded(): boolean {
    return this.#overloaded
  }

  /** Releases per second while requests waited, if any were seen. */
  get drainRate(): number | undefined {
    return this.#rate === undefined ? undefined : this.#rate * 1000
  }

  /** Why a request of `priority` must be refused now, or undefined to admit it. */
  check(priority: Priority, now: number): PoolRefusal | undefined {
    const stats = this.#view.stats()
    if (now - this.#windowStart >= this.#settings.interval) this.#roll(now, stats)
    const { waiting, maxWaiting } = stats
    const full = maxWaiting === 0 ? stats.leased >= stats.max : waiting >= maxWaiting
    if (full) return this.#refuse('queue_full')
    if (priority === 'high' || waiting === 0) return undefined
    if (priority === 'low') {
      if (waiting >= Math.ceil(maxWaiting / 2)) return this.#refuse('queue_full')
      if (this.#overloaded || stats.oldestWaitMs > this.#settings.target) return this.#refuse('queue_delay')
      return undefined
    }
    if (this.#overloaded && waiting >= this.#allowance()) return this.#refuse('queue_delay')
    return undefined
  }

  /**
   * Seconds until the queue ahead of a new request has drained at the observed rate (Little's
   * law), within the configured bounds; the core's `pool.retryAfter` (bounded too) while no
   * drain rate is known yet.
   */
  retryAfter(now: number): number {
    const stats = this.#view.stats()
    if (now - this.#windowStart >= this.#settings.interval) this.#roll(now, stats)
    const { min, max } = this.#settings.retryAfter
    const rate = this.drainRate
    const seconds =
      rate === undefined ? this.#view.options.retryAfter : rate > 0 ? Math.ceil((stats.waiting + 1) / rate) : max
    return Math.min(max, Math.max(min, seconds))
  }

  /** Waiters allowed while overloaded: those the pool drains within `target`, at least one. */
  #allowance(): number {
    const rate = this.#rate
    if (rate === undefined) return 1
    return Math.max(1, Math.floor(rate * this.#settings.target))
  }

  #refuse(reason: PoolRefusal): PoolRefusal {
    this.#refused = true
    return reason
  }

  #roll(now: number, stats: PoolStats): void {
    const elapsed = now - this.#windowStart
    // Waiters still queued have not finished their wait; they count only when nobody got a
    // connection during the whole window (a queue that does not move at all).
    const minWait = this.#acquires > 0 ? this.#windowMin : stats.waiting > 0 ? stats.oldestWaitMs : 0
    const delayed = minWait > this.#settings.target
    this.#overloaded = delayed || (this.#overloaded && this.#refused)
    // The drain rate is only meaningful while requests queued; a window stretched by an idle
    // gap (rolled late because no request came) would understate it.
    if ((this.#queued || stats.waiting > 0) && elapsed <= 4 * this.#settings.interval) {
      const rate = this.#releases / elapsed
      this.#rate = this.#rate === undefined ? rate : this.#rate + RATE_WEIGHT * (rate - this.#rate)
    }
    this.#windowStart = now
    this.#windowMin = Number.POSITIVE_INFINITY
    this.#acquires = 0
    this.#queued = false
    this.#releases = 0
    this.#refused = false
  }
}

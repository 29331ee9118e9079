import type { Clock, PgPoolView, PoolStats } from '@fastify-pg-pool/core'
import type { Priority, ResolvedBackpressureOptions } from './options.js'

export type PoolRefusal = 'queue_full' | 'queue_delay'

/** What admission reads of the pool's view. */
export type AdmissionView = Pick<PgPoolView, 'stats' | 'wouldRefuse' | 'options'>

/**
 * Share of `retryStorm.delay` a held refusal is answered early or late at random (0.5 to 1.5 ×
 * the delay): refusals held together and answered together would come back together, a burst
 * that stalls the requests being served.
 */
export const HOLD_JITTER = 0.5

/** Statements queued on shared connections behind the one each connection runs. */
const sharedBacklog = (stats: PoolStats): number => Math.max(0, stats.sharedQueries - stats.shared)

/** The options the pool-pressure decision reads. */
export type AdmissionSettings = Pick<
  ResolvedBackpressureOptions,
  'target' | 'interval' | 'maxDelay' | 'retryStorm' | 'retryAfter'
>

/**
 * The pool-pressure decision. Three signals, all read synchronously:
 *
 * - the queue cap (`stats.waitingCap`), which nobody passes;
 * - the expected wait of an arriving request, by Little's law: the requests queued ahead of it
 *   (waiting for a connection, or queued on a shared connection behind another pipelined
 *   request's statement) over the rate the pool drains them: the faster of `max` over the mean
 *   hold time and the rate leases were observed to come back (pipelined requests share
 *   connections, so for them the first alone underestimates it);
 * - CoDel's standing-queue detector: the pool is *overloaded* once every request that got a
 *   connection waited longer than `target` for a whole `interval` (the oldest waiter counts
 *   too, so a queue that does not move at all is caught). A queue that drains now and then
 *   (a busy but healthy pool) never trips it, however long its peaks.
 *
 * A normal request is refused when its expected wait exceeds `maxDelay`, or `target` while
 * overloaded. While the pool opens connections (and an interval after), when waits are
 * connection setup, it is refused only when the work queued exceeds `maxDelay` at the drain rate
 * measured before. The overloaded state ends once a request got its connection within `target`
 * and nothing was refused for an interval. A request that finds nobody waiting is always
 * admitted (it waits for one lease at most), so the pool is never idle while work arrives.
 */
export class Admission {
  readonly #view: AdmissionView
  readonly #settings: AdmissionSettings
  readonly #clock: Clock
  readonly #random: () => number
  /** CoDel's first_above_time: when a wait above target, if it lasts, means overload. */
  #firstAbove: number | undefined
  #overloaded = false
  #lastRefusal = Number.NEGATIVE_INFINITY
  /** Hold times of the leases returned in this half-interval and the one before. */
  #bucketStart: number
  #heldSum = 0
  #heldCount = 0
  #prevSum = 0
  #prevCount = 0
  #hold = 0
  #refusals = 0
  #prevRefusals = 0
  #stormSince: number | undefined
  #prevSpan = 0
  /** Expected wait of the requests queued on shared connections, at the last check. */
  #sharedQueueMs = 0
  /** Until when waits are put down to connections being opened (see `check`). */
  #settlingUntil = Number.NEGATIVE_INFINITY
  /** The drain rate at the last check outside settling; 0 before one. */
  #steadyDrain = 0
  /** When the last lease came back to a pool with nothing leased and nobody waiting. */
  #idleSince: number | undefined

  constructor(view: AdmissionView, settings: AdmissionSettings, clock: Clock, random: () => number = Math.random) {
    this.#view = view
    this.#settings = settings
    this.#clock = clock
    this.#random = random
    this.#bucketStart = clock.now()
  }

  readonly onAcquire = (waitMs: number): void => {
    const now = this.#clock.now()
    // The first lease after the pool sat idle for an interval: the hold times known are those of
    // the leases before the pause (a slow report an hour ago), not of the work arriving now. They
    // are forgotten, as on a cold pool, until leases come back.
    if (this.#idleSince !== undefined) {
      if (now - this.#idleSince > this.#settings.interval) this.#forget(now)
      this.#idleSince = undefined
    }
    // A pipelined request that got a share at once still queues behind the statements ahead of
    // it on that connection: the queueing delay the last check saw counts as its sojourn.
    this.#sojourn(Math.max(waitMs, this.#sharedQueueMs), now)
  }

  /** `stalledMs`: how much of the hold the event loop was stalled (see StallClock). */
  readonly onRelease = (heldMs: number, stalledMs = 0): void => {
    this.#heldSum += Math.max(0, heldMs - stalledMs)
    this.#heldCount++
    const { leased, waiting } = this.#view.stats()
    if (leased === 0 && waiting === 0) this.#idleSince = this.#clock.now()
  }

  #forget(now: number): void {
    this.#heldSum = 0
    this.#heldCount = 0
    this.#prevSum = 0
    this.#prevCount = 0
    this.#prevSpan = 0
    this.#bucketStart = now
    this.#hold = 0
    this.#steadyDrain = 0
  }

  get overloaded(): boolean {
    return this.#overloaded
  }

  /**
   * Why a request of `priority` must be refused now, or undefined to admit it. `pipelined`: its
   * route's `config.db.pipeline` (a request that may join a shared connection); unknown: assumed.
   */
  check(priority: Priority, pipelined = true): PoolRefusal | undefined {
    const now = this.#clock.now()
    const stats = this.#view.stats()
    const { waiting } = stats
    // The core's own queue rule (it would refuse with FST_PG_POOL_QUEUE_FULL): a pipelined request
    // that may still join a shared connection is left for the core to decide; an exclusive one
    // cannot join it, and would be refused by the core only after its body was read.
    // A closing pool is no full queue: the core refuses with FST_PG_POOL_CLOSED, nothing is shed.
    if (this.#view.wouldRefuse(pipelined)) return stats.accepting ? this.#refuse('queue_full', now) : undefined
    const queuedShares = sharedBacklog(stats)
    const queued = waiting + queuedShares
    // While the pool opens connections, and for an interval after the last one opened, the
    // requests queued wait for those connections, not behind a standing queue, and the hold
    // times seen are the first statements on new connections: the delay signals would shed a
    // burst that meets a cold pool (in the benchmark, a fresh process under 64 clients refused up
    // to 298 requests in its first half second). Only the caps apply then, and the work queued
    // is held to maxDelay (target for low priority) at the drain rate last measured outside
    // settling (none on a cold pool, whose first leases are slow): a busy pool that opens one more
    // connection in an overload would otherwise queue up to its cap for as long as the connection
    // takes (in the benchmark's retry storm, 100 waiters and a 2xx p99 of ~360 ms).
    if (stats.connecting > 0) this.#settlingUntil = now + this.#settings.interval
    // A connection idle and nobody waiting for one: the request takes it at once (a pipelined one
    // too, before joining a shared connection), whatever is queued on the shared ones.
    if (waiting === 0 && stats.idle > 0) {
      this.#sharedQueueMs = 0
      return undefined
    }
    if (now < this.#settlingUntil) {
      this.#sharedQueueMs = 0
      this.#firstAbove = undefined
      if (priority === 'high' || queued === 0) return undefined
      if (priority === 'low' && waiting >= Math.ceil(stats.waitingCap / 2)) return this.#refuse('queue_full', now)
      const bound = priority === 'low' ? this.#settings.target : this.#settings.maxDelay
      if (this.#steadyDrain > 0 && queued / this.#steadyDrain > bound) return this.#refuse('queue_delay', now)
      return undefined
    }
    const drain = this.#drainPerMs(now)
    this.#steadyDrain = drain
    if (queued === 0) {
      this.#sharedQueueMs = 0
      return undefined
    }
    this.#sharedQueueMs = drain === 0 ? 0 : queuedShares / drain
    if (priority === 'high') return undefined
    this.#sojourn(Math.max(stats.oldestWaitMs, this.#sharedQueueMs), now, true)
    const overloaded = this.#state(now)
    const expected = drain === 0 ? 0 : queued / drain
    if (priority === 'low') {
      if (waiting >= Math.ceil(stats.waitingCap / 2)) return this.#refuse('queue_full', now)
      if (overloaded || expected > this.#settings.target || stats.oldestWaitMs > this.#settings.target) {
        return this.#refuse('queue_delay', now)
      }
      return undefined
    }
    if (expected > (overloaded ? this.#settings.target : this.#settings.maxDelay))
      return this.#refuse('queue_delay', now)
    return undefined
  }

  /**
   * Seconds until the queue ahead of a new request has drained (Little's law), within the
   * configured bounds; the core's `pool.retryAfter` (bounded too) while no lease came back yet.
   */
  retryAfter(): number {
    const { min, max } = this.#settings.retryAfter
    const drain = this.#drainPerMs(this.#clock.now())
    let seconds = this.#view.options.retryAfter
    if (drain > 0) {
      const stats = this.#view.stats()
      seconds = Math.ceil((stats.waiting + sharedBacklog(stats) + 1) / drain / 1000)
    }
    return Math.min(max, Math.max(min, seconds))
  }

  /**
   * Leases the pool returns per ms: `max` connections over the mean hold time, or the rate
   * leases came back over the last half to whole interval when that is faster (connections
   * shared by pipelined requests return several leases per hold time); 0 while nothing is known.
   */
  #drainPerMs(now: number): number {
    const hold = this.#holdMs(now)
    if (hold === 0) return 0
    // A rate counted over a window that saw only a few returns says little (one return of a
    // 200 ms lease in a 50 ms window reads as 20 per second): trusted from 2 per connection on.
    const span = this.#prevSpan + (now - this.#bucketStart)
    const count = this.#prevCount + this.#heldCount
    const observed = span > 0 && count >= 2 * this.#view.options.max ? count / span : 0
    return Math.max(this.#view.options.max / hold, observed)
  }

  /** A wait seen: an acquire's (complete) or the oldest waiter's (`partial`, only ever rising). */
  #sojourn(waitMs: number, now: number, partial = false): void {
    if (waitMs > this.#settings.target) {
      if (this.#firstAbove === undefined) this.#firstAbove = now + this.#settings.interval
    } else if (!partial) this.#firstAbove = undefined
  }

  #state(now: number): boolean {
    const { interval } = this.#settings
    if (!this.#overloaded) {
      if (this.#firstAbove !== undefined && now >= this.#firstAbove) this.#overloaded = true
    } else if (this.#firstAbove === undefined && now - this.#lastRefusal > interval) this.#overloaded = false
    return this.#overloaded
  }

  /**
   * How long a lease is held, ms: the mean over the last half to whole interval (short enough
   * to follow a change of route mix within an interval, long enough that one stall does not
   * swing it); the last known mean while no lease came back; 0 while nothing is known.
   */
  #holdMs(now: number): number {
    this.#roll(now)
    const count = this.#prevCount + this.#heldCount
    if (count > 0) this.#hold = (this.#prevSum + this.#heldSum) / count
    return this.#hold
  }

  #roll(now: number): void {
    if (now - this.#bucketStart < this.#settings.interval / 2) return
    this.#prevSum = this.#heldSum
    this.#prevCount = this.#heldCount
    this.#prevRefusals = this.#refusals
    this.#prevSpan = now - this.#bucketStart
    this.#heldSum = 0
    this.#heldCount = 0
    this.#refusals = 0
    this.#bucketStart = now
  }

  /**
   * How long to hold back a refusal, ms: 0, or during a retry storm `retryStorm.delay` give or
   * take HOLD_JITTER of it. A storm is refusals arriving more than `retryStorm.factor` times
   * faster than the pool drains, over the last half to whole interval: clients retrying at
   * once without honouring Retry-After then cost a timer each instead of a full request cycle,
   * and stop starving the requests being served of CPU. Held back, such clients retry slower,
   * so the storm lasts at least one delay, then ends when refusals fall below half that rate.
   */
  refusalDelay(): number {
    const storm = this.#settings.retryStorm
    if (storm === false || !this.#storming(storm, this.#clock.now())) return 0
    return storm.delay * (1 - HOLD_JITTER + 2 * HOLD_JITTER * this.#random())
  }

  #storming(storm: { readonly factor: number; readonly delay: number }, now: number): boolean {
    const inStorm = this.#stormSince !== undefined
    if (inStorm && now - (this.#stormSince as number) < storm.delay) return true
    const drain = this.#drainPerMs(now)
    const elapsed = now - this.#bucketStart
    if (drain === 0 || this.#prevSpan === 0) {
      this.#stormSince = undefined
      return false
    }
    // Refusals per ms over the rate the pool serves.
    const combined = (this.#prevRefusals + this.#refusals) / (this.#prevSpan + elapsed) / drain
    const storming = combined > (inStorm ? storm.factor / 2 : storm.factor)
    if (!storming) {
      this.#stormSince = undefined
      return false
    }
    if (!inStorm) this.#stormSince = now
    return true
  }

  #refuse(reason: PoolRefusal, now: number): PoolRefusal {
    this.#lastRefusal = now
    this.#refusals++
    return reason
  }
}

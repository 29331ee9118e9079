import type { Lsn } from './lsn.js'
import type { PoolStats } from './pool.js'
import type { ReplicaMonitor } from './replica-monitor.js'

/** Most lag a replica may have and still get reads; `Infinity` leaves a bound out. */
export interface MaxLag {
  readonly bytes: number
  readonly seconds: number
}

/**
 * Why a read went to the primary: no replica's last sample succeeded (`no_replica`), every one
 * past maxLag (`lagging`), none had replayed the client's write (`behind_write`), or the replica
 * chosen could not be connected to (`unreachable`: down since its last sample).
 */
export type FallbackReason = 'no_replica' | 'lagging' | 'behind_write' | 'unreachable'

/** What the router reads of a replica's pool. */
export interface RoutedPool {
  stats(): PoolStats
}

/** Where a read goes: a replica's index, or the primary and why. */
export type ReadRoute = { readonly replica: number } | { readonly replica: undefined; readonly reason: FallbackReason }

/**
 * Chooses a replica for a read: among the replicas whose last sample is fresh, error-free and
 * within `maxLag` (and, for read-your-writes, that have replayed the write), the one with the
 * fewest leases out (held or awaited). None usable: the primary.
 */
export class ReplicaRouter {
  readonly #pools: readonly RoutedPool[]
  readonly #monitor: ReplicaMonitor
  readonly #maxLag: MaxLag
  /** Where the last tie was broken: ties rotate. */
  #next = 0

  constructor(pools: readonly RoutedPool[], monitor: ReplicaMonitor, maxLag: MaxLag) {
    this.#pools = pools
    this.#monitor = monitor
    this.#maxLag = maxLag
  }

  /** Whether replica `index` may serve reads now (fresh sample, reachable, within maxLag). */
  usable(index: number): boolean {
    const lag = this.#monitor.lag(index)
    if (lag === undefined || lag.error !== undefined || !this.#monitor.fresh(index)) return false
    if (!this.#pools[index]?.stats().accepting) return false
    return lag.bytes <= this.#maxLag.bytes && lag.seconds <= this.#maxLag.seconds
  }

  /** The route of a read now; `atLeast`: the position it must see (its request's own write). */
  route(atLeast?: Lsn): ReadRoute {
    let best: number | undefined
    let fewest = Number.POSITIVE_INFINITY
    let anyUsable = false
    const count = this.#pools.length
    for (let k = 0; k < count; k++) {
      const index = (this.#next + k) % count
      if (!this.usable(index)) continue
      anyUsable = true
      if (atLeast !== undefined && this.#monitor.replayed(index) < atLeast) continue
      const stats = (this.#pools[index] as RoutedPool).stats()
      const out = stats.leased + stats.waiting
      if (out < fewest) {
        best = index
        fewest = out
      }
    }
    if (best !== undefined) {
      this.#next = (best + 1) % count
      return { replica: best }
    }
    if (atLeast !== undefined && anyUsable) return { replica: undefined, reason: 'behind_write' }
    return { replica: undefined, reason: this.#anySampled() ? 'lagging' : 'no_replica' }
  }

  /**
   * A read that must see `lsn`: a replica that has replayed it, waiting up to `maxWaitMs` for
   * the usable one closest to it; else the primary.
   */
  async routeAfter(lsn: Lsn, maxWaitMs: number): Promise<ReadRoute> {
    const now = this.route(lsn)
    if (now.replica !== undefined || now.reason !== 'behind_write' || maxWaitMs <= 0) return now
    let closest: number | undefined
    for (let index = 0; index < this.#pools.length; index++) {
      if (!this.usable(index)) continue
      if (closest === undefined || this.#monitor.replayed(index) > this.#monitor.replayed(closest)) closest = index
    }
    if (closest !== undefined && (await this.#monitor.waitReplayed(closest, lsn, maxWaitMs))) {
      return { replica: closest }
    }
    return { replica: undefined, reason: 'behind_write' }
  }

  #anySampled(): boolean {
    for (let index = 0; index < this.#pools.length; index++) {
      const lag = this.#monitor.lag(index)
      if (lag !== undefined && lag.error === undefined) return true
    }
    return false
  }
}

import type { BatchObservableCallback, Histogram, Meter } from '@opentelemetry/api'
import { DURATION_BUCKETS, METRIC } from './attributes.js'
import type { PoolIdentity } from './pool-identity.js'
import type { Subscriptions } from './subscriptions.js'

/** The pool keeps no idle connection on purpose: idle ones close after `idleTimeout`. */
const IDLE_MIN = 0

const seconds = (ms: number) => ms / 1000

/** The observable instruments of one meter, and every instrumentation's pools it reads. */
interface SharedCounts {
  readonly sources: Set<readonly PoolIdentity[]>
  close(): void
}

const byMeter = new WeakMap<Meter, SharedCounts>()

/**
 * One batch callback per meter for every instrumentation in the process: two apps on one
 * database give their primaries the same default name, and two callbacks observing one series
 * leave the SDK with one of the two values. Pools of one name are summed here instead.
 */
function sharedCounts(meter: Meter): SharedCounts {
  const existing = byMeter.get(meter)
  if (existing !== undefined) return existing
  const connections = { unit: '{connection}' }
  const count = meter.createObservableUpDownCounter(METRIC.connectionCount, {
    ...connections,
    description: 'The number of connections that are currently in state described by the state attribute.',
  })
  const idleMax = meter.createObservableUpDownCounter(METRIC.idleMax, {
    ...connections,
    description: 'The maximum number of idle open connections allowed.',
  })
  const idleMin = meter.createObservableUpDownCounter(METRIC.idleMin, {
    ...connections,
    description: 'The minimum number of idle open connections allowed.',
  })
  const max = meter.createObservableUpDownCounter(METRIC.max, {
    ...connections,
    description: 'The maximum number of open connections allowed.',
  })
  const pending = meter.createObservableUpDownCounter(METRIC.pendingRequests, {
    unit: '{request}',
    description: 'The number of current pending requests for an open connection.',
  })
  const observables = [count, idleMax, idleMin, max, pending]
  const sources = new Set<readonly PoolIdentity[]>()
  const observe: BatchObservableCallback = (result) => {
    const byName = new Map<string, { pool: PoolIdentity; idle: number; used: number; max: number; waiting: number }>()
    for (const pools of sources) {
      for (const pool of pools) {
        const stats = pool.view.stats()
        const sum = byName.get(pool.name)
        if (sum === undefined) {
          byName.set(pool.name, { pool, idle: stats.idle, used: stats.leased, max: stats.max, waiting: stats.waiting })
        } else {
          sum.idle += stats.idle
          sum.used += stats.leased
          sum.max += stats.max
          sum.waiting += stats.waiting
        }
      }
    }
    for (const { pool, idle, used, max: most, waiting } of byName.values()) {
      result.observe(count, idle, pool.idle)
      result.observe(count, used, pool.used)
      // Every connection may sit idle: the pool caps open connections, not idle ones.
      result.observe(idleMax, most, pool.pool)
      result.observe(idleMin, IDLE_MIN, pool.pool)
      result.observe(max, most, pool.pool)
      result.observe(pending, waiting, pool.pool)
    }
  }
  meter.addBatchObservableCallback(observe, observables)
  const shared: SharedCounts = {
    sources,
    close() {
      meter.removeBatchObservableCallback(observe, observables)
      byMeter.delete(meter)
    },
  }
  byMeter.set(meter, shared)
  return shared
}

/** Adds a pool to the metrics (its events followed from then on). */
export type AddPoolMetrics = (pool: PoolIdentity) => void

/**
 * The conventions' connection-pool metrics for each pool: the counts are read from `stats()`
 * when the SDK collects (one read per pool per collection, for all of them), the times and
 * timeouts follow the view's events. Every series carries `db.client.connection.pool.name`.
 * `pools` is read at each collection: pools added later are collected too.
 */
export function registerPoolMetrics(
  meter: Meter,
  pools: readonly PoolIdentity[],
  subscriptions: Subscriptions,
): AddPoolMetrics {
  const counts = sharedCounts(meter)
  counts.sources.add(pools)
  subscriptions.add(() => {
    counts.sources.delete(pools)
    if (counts.sources.size === 0) counts.close()
  })

  const timeouts = meter.createCounter(METRIC.timeouts, {
    unit: '{timeout}',
    description: 'The number of connection timeouts that have occurred trying to obtain a connection from the pool.',
  })
  const histogram = (name: string, description: string): Histogram =>
    meter.createHistogram(name, { unit: 's', description, advice: { explicitBucketBoundaries: [...DURATION_BUCKETS] } })
  const createTime = histogram(METRIC.createTime, 'The time it took to create a new connection.')
  const waitTime = histogram(METRIC.waitTime, 'The time it took to obtain an open connection from the pool.')
  const useTime = histogram(METRIC.useTime, 'The time between borrowing a connection and returning it to the pool.')

  const follow = ({ view, pool: attributes }: PoolIdentity) => {
    const onAcquire = (waitMs: number) => waitTime.record(seconds(waitMs), attributes)
    const onAcquireError = (reason: string) => {
      if (reason === 'timeout') timeouts.add(1, attributes)
    }
    const onRelease = (heldMs: number) => useTime.record(seconds(heldMs), attributes)
    const onConnect = (ms: number) => createTime.record(seconds(ms), attributes)
    view.on('acquire', onAcquire).on('acquireError', onAcquireError).on('release', onRelease).on('connect', onConnect)
    subscriptions.add(() => {
      view
        .off('acquire', onAcquire)
        .off('acquireError', onAcquireError)
        .off('release', onRelease)
        .off('connect', onConnect)
    })
  }
  for (const pool of pools) follow(pool)
  return follow
}

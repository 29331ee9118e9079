import type { BatchObservableCallback, Histogram, Meter } from '@opentelemetry/api'
import { DURATION_BUCKETS, METRIC } from './attributes.js'
import type { PoolIdentity } from './pool-identity.js'
import type { Subscriptions } from './subscriptions.js'

/** The pool keeps no idle connection on purpose: idle ones close after `idleTimeout`. */
const IDLE_MIN = 0

const seconds = (ms: number) => ms / 1000

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
  const observe: BatchObservableCallback = (result) => {
    for (const pool of pools) {
      const stats = pool.view.stats()
      result.observe(count, stats.idle, pool.idle)
      result.observe(count, stats.leased, pool.used)
      // Every connection may sit idle: the pool caps open connections, not idle ones.
      result.observe(idleMax, stats.max, pool.pool)
      result.observe(idleMin, IDLE_MIN, pool.pool)
      result.observe(max, stats.max, pool.pool)
      result.observe(pending, stats.waiting, pool.pool)
    }
  }
  meter.addBatchObservableCallback(observe, observables)
  subscriptions.add(() => meter.removeBatchObservableCallback(observe, observables))

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

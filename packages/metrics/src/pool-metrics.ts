import {
  type AcquireFailure,
  type CloseReason,
  channels,
  type PgPoolView,
  type PoolEvents,
  type PoolStats,
  type RefusalMessage,
  type TransactionOutcome,
} from '@fastify-pg-pool/core'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { BoundedLabel } from './bounded-label.js'
import { FastHistogram, type HistogramSeries } from './fast-histogram.js'
import type { ResolvedMetricsOptions } from './options.js'

const acquireResults: readonly ('ok' | AcquireFailure)[] = ['ok', 'timeout', 'rejected', 'aborted', 'error']
const closeReasons: readonly CloseReason[] = [
  'idle',
  'lifetime',
  'statements',
  'parameters',
  'error',
  'deadline',
  'shutdown',
]
const transactionOutcomes: readonly TransactionOutcome[] = ['commit', 'rollback', 'commit_failed', 'commit_unknown']
const fallbackReasons: readonly PoolEvents['readFallback'][0][] = [
  'no_replica',
  'lagging',
  'behind_write',
  'unreachable',
]
/** Shed reasons whose series exist at 0 from the start; others appear when first counted. */
export const knownShedReasons: readonly string[] = ['queue_full', 'queue_delay', 'process']
const MAX_SHED_REASONS = 20

type ReplicaState = NonNullable<ReturnType<PgPoolView['replica']>>
type PoolListeners = { [E in keyof PoolEvents]?: (...args: PoolEvents[E]) => void }

/** The label every pool metric carries: the view's name (`primary`, an instance's, `replica-0`...). */
export const POOL_LABEL = 'pool'

/** One pool's state between scrapes. */
interface PoolSeries {
  readonly view: PgPoolView
  readonly pool: string
  /** Successful acquires since the last scrape (added to the counter when scraped). */
  acquired: number
  /** The listener's totals at the last scrape (its counters grow by the difference). */
  notifications: number
  reconnections: number
  detach(): void
}

/** What the plugin holds: pools are added as the app registers them. */
export interface PoolMetrics {
  /** Starts the series of `view` (every known label at 0) and follows its events. */
  add(view: PgPoolView): void
  /** Stops following every pool. */
  detach(): void
}

/**
 * Registers the pool metrics, each labelled with its pool: gauges read from each pool's `stats()`
 * when scraped, counters and histograms fed by each view's events.
 */
export function registerPoolMetrics(options: ResolvedMetricsOptions, routes: BoundedLabel): PoolMetrics {
  const { namePrefix: prefix, buckets } = options
  const registers: Registry[] = [options.registry]
  const seconds = (ms: number) => ms / 1000
  const pools: PoolSeries[] = []
  const byView = new Map<PgPoolView, PoolSeries>()

  new Gauge({
    name: `${prefix}connections`,
    help: 'Server connections of the pool by state: idle, leased (held by a request or job), connecting',
    labelNames: [POOL_LABEL, 'state'],
    registers,
    collect() {
      for (const { view, pool } of pools) {
        const stats = view.stats()
        this.set({ pool, state: 'idle' }, stats.idle)
        this.set({ pool, state: 'leased' }, stats.leased)
        this.set({ pool, state: 'connecting' }, stats.connecting)
      }
    },
  })
  // Gauges read when scraped, per pool; a read that gives undefined removes the pool's series.
  const readGauge = (name: string, help: string, read: (view: PgPoolView) => number | undefined) =>
    new Gauge({
      name: `${prefix}${name}`,
      help,
      labelNames: [POOL_LABEL],
      registers,
      collect() {
        for (const { view, pool } of pools) {
          const value = read(view)
          if (value === undefined) this.remove({ pool })
          else this.set({ pool }, value)
        }
      },
    })
  const statsGauge = (name: string, help: string, read: (stats: PoolStats) => number) =>
    readGauge(name, help, (view) => read(view.stats()))
  statsGauge('connections_max', 'Most server connections the pool opens (pool.max)', (s) => s.max)
  statsGauge('waiters', 'Requests waiting for a connection', (s) => s.waiting)
  statsGauge(
    'waiters_max',
    'Waiters allowed at once (pool.maxWaiting); past it acquires are refused at once',
    (s) => s.maxWaiting,
  )
  statsGauge(
    'shared_connections',
    'Leased connections shared by requests of pipelined routes (config.db.pipeline)',
    (s) => s.shared,
  )
  statsGauge('pipelined_requests', 'Requests of pipelined routes holding a share of a connection', (s) => s.pipelined)
  statsGauge(
    'oldest_wait_seconds',
    'How long the oldest waiter has waited for a connection (0 when nobody waits)',
    (s) => seconds(s.oldestWaitMs),
  )
  // Present only once the core read the server's budget (never behind PgBouncer).
  const budgetGauge = (
    name: string,
    help: string,
    read: (b: NonNullable<ReturnType<PgPoolView['budget']>>) => number,
  ) =>
    readGauge(name, help, (view) => {
      const budget = view.budget()
      return budget === undefined ? undefined : read(budget)
    })
  budgetGauge('server_max_connections', "The server's max_connections", (b) => b.maxConnections)
  budgetGauge(
    'server_reserved_connections',
    'Server connections reserved for superusers and privileged roles',
    (b) => b.reserved,
  )
  budgetGauge(
    'connections_demand',
    'Connections all instances may open at full load: pool.max x pool.instances',
    (b) => b.demand,
  )
  readGauge('listeners', 'Handlers listening for notifications (app.db.listen) on the LISTEN connection', (view) => {
    return view.listener().listeners
  })
  // A read replica's lag and routing state, once sampled (absent for primaries).
  const replicaGauge = (name: string, help: string, read: (r: ReplicaState) => number | undefined) =>
    readGauge(name, help, (view) => {
      const replica = view.replica()
      return replica === undefined ? undefined : read(replica)
    })
  replicaGauge('replica_lag_seconds', 'How far a read replica is behind its primary, in seconds', (r) => r.lag?.seconds)
  replicaGauge('replica_lag_bytes', 'WAL a read replica has not replayed yet, in bytes', (r) => r.lag?.bytes)
  replicaGauge(
    'replica_usable',
    'Whether a read replica gets reads now (1): sampled, reachable, a standby, within maxLag',
    (r) => (r.usable ? 1 : 0),
  )
  readGauge(
    'listener_connected',
    'Whether the LISTEN connection is open with every channel listened to (1), or not (0: reconnecting, or nothing listens)',
    (view) => (view.listener().connected ? 1 : 0),
  )

  // Observed on every request: series looked up once, not per observation (fast-histogram.ts).
  const acquireSeconds = new FastHistogram({
    name: `${prefix}acquire_seconds`,
    help: 'Time acquires waited before they got a connection',
    labelNames: [POOL_LABEL],
    buckets: buckets.acquire,
    registers,
  })
  const leaseSeconds = new FastHistogram({
    name: `${prefix}lease_seconds`,
    help: 'Time a connection was held, by route template (app.db for pool-level queries)',
    labelNames: [POOL_LABEL, 'route'],
    buckets: buckets.lease,
    registers,
  })
  const connectSeconds = new Histogram({
    name: `${prefix}connect_seconds`,
    help: 'Time to open a server connection',
    labelNames: [POOL_LABEL],
    buckets: [...buckets.connect],
    registers,
  })
  const acquires = new Counter({
    name: `${prefix}acquires_total`,
    help: 'Acquires by result: ok, timeout (acquireTimeout passed), rejected (queue full or closing), aborted (the request ended), error (connecting failed)',
    labelNames: [POOL_LABEL, 'result'],
    registers,
    collect() {
      for (const series of pools) {
        this.inc({ pool: series.pool, result: 'ok' }, series.acquired)
        series.acquired = 0
      }
    },
  })
  const opened = new Counter({
    name: `${prefix}connections_opened_total`,
    help: 'Server connections opened',
    labelNames: [POOL_LABEL],
    registers,
  })
  const closed = new Counter({
    name: `${prefix}connections_closed_total`,
    help: 'Server connections closed by reason: idle, lifetime, statements (maxPreparedStatements), parameters (behind PgBouncer, a request changed a parameter it replays), error, deadline (query past statement timeout), shutdown',
    labelNames: [POOL_LABEL, 'reason'],
    registers,
  })
  const connectErrors = new Counter({
    name: `${prefix}connection_errors_total`,
    help: 'Attempts to open a server connection that failed',
    labelNames: [POOL_LABEL],
    registers,
  })
  const leaks = new Counter({
    name: `${prefix}leaks_total`,
    help: 'Leases held past pool.leakDetectionThreshold',
    labelNames: [POOL_LABEL],
    registers,
  })
  const shed = new Counter({
    name: `${prefix}requests_shed_total`,
    help: 'Requests refused by admission control, by reason',
    labelNames: [POOL_LABEL, 'reason'],
    registers,
  })
  const shedReasons = new BoundedLabel(MAX_SHED_REASONS)
  for (const reason of knownShedReasons) shedReasons.value(reason)
  const transactions = new Counter({
    name: `${prefix}transactions_total`,
    help: 'Transactions the suite ran (route transactions, begin(), app.db.transaction()) by outcome: commit, rollback, commit_failed (the server refused the COMMIT), commit_unknown (COMMIT sent, no answer: it may have committed)',
    labelNames: [POOL_LABEL, 'outcome'],
    registers,
  })
  const resetFailures = new Counter({
    name: `${prefix}session_reset_failures_total`,
    help: 'Session resets that failed: their connection was retired (and a holder handed it meanwhile was moved to another)',
    labelNames: [POOL_LABEL],
    registers,
  })
  const fallbacks = new Counter({
    name: `${prefix}read_fallbacks_total`,
    help: 'Reads meant for a replica that the primary served, by reason: no_replica (none usable), lagging (all past maxLag), behind_write (none had replayed the client’s write), unreachable (the replica chosen could not be connected to)',
    labelNames: [POOL_LABEL, 'reason'],
    registers,
  })
  // The listener's totals, read when scraped: each counter grows by what the view counted since.
  const listenerCounter = (name: string, help: string, key: 'notifications' | 'reconnections') =>
    new Counter({
      name: `${prefix}${name}`,
      help,
      labelNames: [POOL_LABEL],
      registers,
      collect() {
        for (const series of pools) {
          const total = series.view.listener()[key]
          if (total > series[key]) this.inc({ pool: series.pool }, total - series[key])
          series[key] = total
        }
      },
    })
  const notifications = listenerCounter(
    'notifications_total',
    'Notifications the LISTEN connection received on the listened channels',
    'notifications',
  )
  const reconnections = listenerCounter(
    'listener_reconnections_total',
    'Times the LISTEN connection was lost and every channel was listened to again on a new one',
    'reconnections',
  )

  // Admission control (or any plugin that refuses work) publishes refusals on a diagnostics
  // channel; this app counts its own pools'.
  const onRefusal = (message: unknown) => {
    const refusal = message as RefusalMessage
    const series = byView.get(refusal.pool)
    if (series !== undefined) shed.inc({ pool: series.pool, reason: shedReasons.value(String(refusal.reason)) })
  }
  channels.refusal.subscribe(onRefusal)

  const add = (view: PgPoolView) => {
    if (byView.has(view)) return
    if (view.role === 'replica') {
      // An instance with replicas: its primary's fallbacks exist at 0 from now on.
      const primary = pools.find((series) => series.view.role === 'primary' && series.view.instance === view.instance)
      if (primary !== undefined) for (const reason of fallbackReasons) fallbacks.inc({ pool: primary.pool, reason }, 0)
    }
    const pool = view.name
    const labels = { pool }
    // Every known label at 0 from the start, so that rate() and alerts work before the first event.
    for (const result of acquireResults) acquires.inc({ pool, result }, 0)
    for (const reason of closeReasons) closed.inc({ pool, reason }, 0)
    for (const reason of knownShedReasons) shed.inc({ pool, reason }, 0)
    for (const outcome of transactionOutcomes) transactions.inc({ pool, outcome }, 0)
    for (const counter of [connectErrors, leaks, resetFailures, notifications, reconnections]) counter.inc(labels, 0)
    connectSeconds.zero(labels)
    // Connections opened before this plugin saw the pool (the core's start-up check).
    const { open, connecting } = view.stats()
    opened.inc(labels, open - connecting)
    const acquire = acquireSeconds.series(labels)
    const leaseSeries = new Map<string, HistogramSeries>()
    const leaseSeriesOf = (route: string) => {
      let series = leaseSeries.get(route)
      if (series === undefined) {
        series = leaseSeconds.series({ pool, route: routes.value(route) })
        leaseSeries.set(route, series)
      }
      return series
    }
    const listener = view.listener()
    const series: PoolSeries = {
      view,
      pool,
      acquired: 0,
      // Counted from when this plugin saw the pool, as the other counters are.
      notifications: listener.notifications,
      reconnections: listener.reconnections,
      detach: () => {
        for (const [event, handler] of entries) view.off(event, handler as never)
      },
    }
    const listeners: PoolListeners = {
      acquire(waitMs) {
        series.acquired++
        acquire.observe(seconds(waitMs))
      },
      acquireError: (reason) => acquires.inc({ pool, result: reason }),
      release: (heldMs, route) => leaseSeriesOf(route).observe(seconds(heldMs)),
      connect(ms) {
        opened.inc(labels)
        connectSeconds.observe(labels, seconds(ms))
      },
      connectError: () => connectErrors.inc(labels),
      close: (reason) => closed.inc({ pool, reason }),
      leak: () => leaks.inc(labels),
      transaction: (outcome) => transactions.inc({ pool, outcome }),
      resetError: () => resetFailures.inc(labels),
      readFallback: (reason) => fallbacks.inc({ pool, reason }),
    }
    // One cast for the loop: each entry pairs an event with its own listener type.
    const entries = Object.entries(listeners) as [keyof PoolEvents, (...args: never) => void][]
    for (const [event, handler] of entries) view.on(event, handler as never)
    pools.push(series)
    byView.set(view, series)
  }

  return {
    add,
    detach() {
      channels.refusal.unsubscribe(onRefusal)
      for (const series of pools) series.detach()
    },
  }
}

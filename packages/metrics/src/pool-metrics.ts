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
const closeReasons: readonly CloseReason[] = ['idle', 'lifetime', 'error', 'deadline', 'shutdown']
const transactionOutcomes: readonly TransactionOutcome[] = ['commit', 'rollback', 'commit_failed', 'commit_unknown']
/** Shed reasons whose series exist at 0 from the start; others appear when first counted. */
export const knownShedReasons: readonly string[] = ['queue_full', 'queue_delay', 'process']
const MAX_SHED_REASONS = 20

type PoolListeners = { [E in keyof PoolEvents]?: (...args: PoolEvents[E]) => void }

/**
 * Registers the pool's metrics: gauges read from `stats()` when scraped, counters and histograms
 * fed by the view's events. Returns the function that unsubscribes.
 */
export function registerPoolMetrics(
  view: PgPoolView,
  options: ResolvedMetricsOptions,
  routes: BoundedLabel,
): () => void {
  const { namePrefix: prefix, buckets } = options
  const registers: Registry[] = [options.registry]
  const seconds = (ms: number) => ms / 1000

  new Gauge({
    name: `${prefix}connections`,
    help: 'Server connections of the pool by state: idle, leased (held by a request or job), connecting',
    labelNames: ['state'],
    registers,
    collect() {
      const stats = view.stats()
      this.set({ state: 'idle' }, stats.idle)
      this.set({ state: 'leased' }, stats.leased)
      this.set({ state: 'connecting' }, stats.connecting)
    },
  })
  // Gauges read when scraped; a read that gives undefined removes the series.
  const readGauge = (name: string, help: string, read: () => number | undefined) =>
    new Gauge({
      name: `${prefix}${name}`,
      help,
      registers,
      collect() {
        const value = read()
        if (value === undefined) this.remove()
        else this.set(value)
      },
    })
  const statsGauge = (name: string, help: string, read: (stats: PoolStats) => number) =>
    readGauge(name, help, () => read(view.stats()))
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
    readGauge(name, help, () => {
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

  // Observed on every request: series looked up once, not per observation (fast-histogram.ts).
  const acquireSeconds = new FastHistogram({
    name: `${prefix}acquire_seconds`,
    help: 'Time acquires waited before they got a connection',
    buckets: buckets.acquire,
    registers,
  }).series()
  const leaseSeconds = new FastHistogram({
    name: `${prefix}lease_seconds`,
    help: 'Time a connection was held, by route template (app.db for pool-level queries)',
    labelNames: ['route'],
    buckets: buckets.lease,
    registers,
  })
  const leaseSeries = new Map<string, HistogramSeries>()
  const leaseSeriesOf = (route: string) => {
    let series = leaseSeries.get(route)
    if (series === undefined) {
      series = leaseSeconds.series({ route: routes.value(route) })
      leaseSeries.set(route, series)
    }
    return series
  }
  const connectSeconds = new Histogram({
    name: `${prefix}connect_seconds`,
    help: 'Time to open a server connection',
    buckets: [...buckets.connect],
    registers,
  })
  connectSeconds.zero({})
  // Successful acquires are counted in a number and added to the counter when scraped.
  let acquiredSinceScrape = 0
  const acquires = new Counter({
    name: `${prefix}acquires_total`,
    help: 'Acquires by result: ok, timeout (acquireTimeout passed), rejected (queue full or closing), aborted (the request ended), error (connecting failed)',
    labelNames: ['result'],
    registers,
    collect() {
      this.inc({ result: 'ok' }, acquiredSinceScrape)
      acquiredSinceScrape = 0
    },
  })
  for (const result of acquireResults) acquires.inc({ result }, 0)
  const opened = new Counter({
    name: `${prefix}connections_opened_total`,
    help: 'Server connections opened',
    registers,
  })
  // Connections opened before this plugin registered (the core's start-up check).
  const { open, connecting } = view.stats()
  opened.inc(open - connecting)
  const closed = new Counter({
    name: `${prefix}connections_closed_total`,
    help: 'Server connections closed by reason: idle, lifetime, error, deadline (query past statement timeout), shutdown',
    labelNames: ['reason'],
    registers,
  })
  for (const reason of closeReasons) closed.inc({ reason }, 0)
  const connectErrors = new Counter({
    name: `${prefix}connection_errors_total`,
    help: 'Attempts to open a server connection that failed',
    registers,
  })
  const leaks = new Counter({
    name: `${prefix}leaks_total`,
    help: 'Leases held past pool.leakDetectionThreshold',
    registers,
  })
  const shed = new Counter({
    name: `${prefix}requests_shed_total`,
    help: 'Requests refused by admission control, by reason',
    labelNames: ['reason'],
    registers,
  })
  for (const reason of knownShedReasons) shed.inc({ reason }, 0)
  const shedReasons = new BoundedLabel(MAX_SHED_REASONS)
  for (const reason of knownShedReasons) shedReasons.value(reason)

  const transactions = new Counter({
    name: `${prefix}transactions_total`,
    help: 'Transactions the suite ran (route transactions, begin(), app.db.transaction()) by outcome: commit, rollback, commit_failed (the server refused the COMMIT), commit_unknown (COMMIT sent, no answer: it may have committed)',
    labelNames: ['outcome'],
    registers,
  })
  for (const outcome of transactionOutcomes) transactions.inc({ outcome }, 0)
  const resetFailures = new Counter({
    name: `${prefix}session_reset_failures_total`,
    help: 'Session resets that failed: their connection was retired (and a holder handed it meanwhile was moved to another)',
    registers,
  })

  const listeners: PoolListeners = {
    acquire(waitMs) {
      acquiredSinceScrape++
      acquireSeconds.observe(seconds(waitMs))
    },
    acquireError: (reason) => acquires.inc({ result: reason }),
    release: (heldMs, route) => leaseSeriesOf(route).observe(seconds(heldMs)),
    connect(ms) {
      opened.inc()
      connectSeconds.observe(seconds(ms))
    },
    connectError: () => connectErrors.inc(),
    close: (reason) => closed.inc({ reason }),
    leak: () => leaks.inc(),
    transaction: (outcome) => transactions.inc({ outcome }),
    resetError: () => resetFailures.inc(),
  }
  // Admission control (or any plugin that refuses work) publishes refusals on a diagnostics
  // channel; this app counts its own pool's.
  const onRefusal = (message: unknown) => {
    const refusal = message as RefusalMessage
    if (refusal.pool === view) shed.inc({ reason: shedReasons.value(String(refusal.reason)) })
  }
  channels.refusal.subscribe(onRefusal)
  // One cast for the loop: each entry pairs an event with its own listener type.
  const entries = Object.entries(listeners) as [keyof PoolEvents, (...args: never) => void][]
  for (const [event, listener] of entries) view.on(event, listener as never)
  return () => {
    channels.refusal.unsubscribe(onRefusal)
    for (const [event, listener] of entries) view.off(event, listener as never)
  }
}

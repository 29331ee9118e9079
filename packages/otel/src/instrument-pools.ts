import { channels, optionKit, type PgPoolView } from '@fastify-pg-pool/core'
import { AcquireSpans } from './acquire-spans.js'
import { type PgPoolOtelOptions, type ResolvedOtelOptions, resolveOtelOptions } from './options.js'
import { type PoolIdentity, poolIdentity } from './pool-identity.js'
import { registerPoolMetrics } from './pool-metrics.js'
import { realMeter, realTracer } from './providers.js'
import { QuerySummaries } from './query-summary.js'
import { RefusalEvents } from './refusal-events.js'
import { StatementTelemetry } from './statement-telemetry.js'
import { Subscriptions } from './subscriptions.js'
import { TransactionSpans } from './transaction-spans.js'

/** What `instrumentPools` set up; `close()` undoes all of it. */
export interface PoolInstrumentation {
  /** Spans are made: traces are on and a real tracer provider is registered. */
  readonly tracing: boolean
  /** Metrics are recorded: metrics are on and a real meter provider is registered. */
  readonly metrics: boolean
  /** The pools' `db.client.connection.pool.name`, in the order given (and added). */
  readonly poolNames: readonly string[]
  /** Instruments one more pool (a named instance or a replica registered later). */
  add(view: PgPoolView): void
  close(): void
}

/**
 * Instruments the given pools (`app.pgPools.all()`; `add()` for those registered later): one
 * subscriber per diagnostics channel for all of them, each message routed by its `pool`.
 *
 * With no SDK registered (the API's no-op providers) nothing is subscribed at all: the core
 * publishes only while a channel has subscribers, so it builds no message and the requests pay
 * nothing. The check is made here, once: register the SDK before the app (as every
 * OpenTelemetry instrumentation asks).
 */
export function instrumentPools(
  views: readonly PgPoolView[],
  options: Omit<PgPoolOtelOptions, 'pools'> = {},
): PoolInstrumentation {
  return instrument(views, resolveOtelOptions(options))
}

/**
 * The pools some instrumentation of this process follows, until it closes. The channels are
 * global: a second instrumentation of a pool (the plugin registered in two encapsulated contexts)
 * would draw each of its statements twice, count them twice, and sum its connections twice.
 */
const instrumented = new WeakSet<PgPoolView>()

/** instrumentPools with options already resolved (the plugin's). */
export function instrument(views: readonly PgPoolView[], options: ResolvedOtelOptions): PoolInstrumentation {
  for (const view of views) {
    if (instrumented.has(view)) {
      throw optionKit.invalidOption(
        'otel.pools',
        `the pool ${view.name} is instrumented already (the plugin registered twice, in two contexts?): its spans and metrics would be counted twice`,
      )
    }
  }
  // Live: the subscribers look pools up here per message, the metrics read them per collection.
  const identities: PoolIdentity[] = []
  const pools = new Map<PgPoolView, PoolIdentity>()
  const identify = (view: PgPoolView): PoolIdentity | undefined => {
    // Added later (a named instance) while another instrumentation follows it already: left to that one.
    if (pools.has(view) || instrumented.has(view)) return undefined
    const identity = poolIdentity(view, options.poolName)
    instrumented.add(view)
    identities.push(identity)
    pools.set(view, identity)
    return identity
  }
  const release = () => {
    for (const view of pools.keys()) instrumented.delete(view)
  }
  try {
    for (const view of views) identify(view)
  } catch (error) {
    release()
    throw error
  }
  const tracer = options.traces ? realTracer(options.tracerProvider) : undefined
  const meter = options.metrics ? realMeter(options.meterProvider) : undefined
  const subscriptions = new Subscriptions()
  subscriptions.add(release)

  let transactions: TransactionSpans | undefined
  if (tracer !== undefined) {
    const acquires = new AcquireSpans(tracer, pools)
    subscriptions.on(channels.acquireStart, acquires.start.bind(acquires))
    subscriptions.on(channels.acquireEnd, acquires.end.bind(acquires))
    const opened = new TransactionSpans(tracer, pools)
    transactions = opened
    subscriptions.on(channels.transactionStart, opened.start.bind(opened))
    subscriptions.on(channels.transactionEnd, opened.end.bind(opened))
    subscriptions.add(() => opened.close())
    const refusals = new RefusalEvents(pools)
    subscriptions.on(channels.refusal, refusals.record.bind(refusals))
  }
  if (tracer !== undefined || meter !== undefined) {
    const statements = new StatementTelemetry(pools, {
      tracer,
      meter,
      queryText: options.queryText,
      summaries: new QuerySummaries(),
      transactions,
    })
    subscriptions.on(channels.queryStart, statements.start.bind(statements))
    subscriptions.on(channels.queryEnd, statements.end.bind(statements))
  }
  const addMetrics = meter === undefined ? undefined : registerPoolMetrics(meter, identities, subscriptions)

  return {
    tracing: tracer !== undefined,
    metrics: meter !== undefined,
    get poolNames() {
      return identities.map((identity) => identity.name)
    },
    add(view) {
      const identity = identify(view)
      if (identity !== undefined) addMetrics?.(identity)
    },
    close: () => subscriptions.close(),
  }
}

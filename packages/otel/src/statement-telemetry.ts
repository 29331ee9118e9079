import { performance } from 'node:perf_hooks'
import type { PgPoolView, QueryMessage } from '@fastify-pg-pool/core'
import {
  type Attributes,
  type Histogram,
  type Meter,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
} from '@opentelemetry/api'
import { ATTR, DB_SYSTEM_POSTGRESQL, DURATION_BUCKETS, METRIC } from './attributes.js'
import { describeError } from './error-type.js'
import type { PoolIdentity } from './pool-identity.js'
import type { QuerySummaries, QuerySummary } from './query-summary.js'
import type { TransactionSpans } from './transaction-spans.js'

interface Running {
  readonly pool: PoolIdentity
  readonly summary: QuerySummary
  readonly startedAt: number
  readonly span: Span | undefined
}

export interface StatementTelemetryOptions {
  readonly tracer: Tracer | undefined
  readonly meter: Meter | undefined
  /** Record `db.query.text` (the statement with `$n` placeholders, never the values). */
  readonly queryText: boolean
  readonly summaries: QuerySummaries
  readonly transactions: TransactionSpans | undefined
}

/**
 * Each statement as a CLIENT span named by its query summary, and its duration in
 * `db.client.operation.duration`: the same start and end for both, as the conventions ask.
 */
export class StatementTelemetry {
  readonly #pools: ReadonlyMap<PgPoolView, PoolIdentity>
  readonly #options: StatementTelemetryOptions
  readonly #duration: Histogram | undefined
  readonly #running = new WeakMap<QueryMessage, Running>()
  /** Span attributes per pool and statement text (a summary stands for one text). */
  readonly #spanAttributes = new PerSummary()
  /** Metric attributes of successful statements, per pool and summary. */
  readonly #succeeded = new PerSummary()

  constructor(pools: ReadonlyMap<PgPoolView, PoolIdentity>, options: StatementTelemetryOptions) {
    this.#pools = pools
    this.#options = options
    this.#duration = options.meter?.createHistogram(METRIC.operationDuration, {
      description: 'Duration of database client operations.',
      unit: 's',
      advice: { explicitBucketBoundaries: [...DURATION_BUCKETS] },
    })
  }

  start(message: QueryMessage): void {
    const pool = this.#pools.get(message.pool)
    if (pool === undefined) return
    const { tracer, queryText, summaries, transactions } = this.#options
    const text = message.text
    const summary = summaries.of(text)
    const startedAt = performance.now()
    let span: Span | undefined
    if (tracer !== undefined) {
      const attributes = this.#spanAttributes.get(pool, summary, () => {
        const built: Attributes = { ...pool.server }
        if (summary.summary !== '') built[ATTR.dbQuerySummary] = summary.summary
        if (summary.operation !== undefined) built[ATTR.dbOperationName] = summary.operation
        if (queryText) built[ATTR.dbQueryText] = text
        return built
      })
      span = tracer.startSpan(
        spanName(summary, pool),
        { kind: SpanKind.CLIENT, attributes, startTime: startedAt },
        transactions?.contextFor(message),
      )
    }
    this.#running.set(message, { pool, summary, startedAt, span })
  }

  end(message: QueryMessage): void {
    const running = this.#running.get(message)
    if (running === undefined) return
    this.#running.delete(message)
    const endedAt = performance.now()
    const { pool, summary, span } = running
    const failure = message.error === undefined ? undefined : describeError(message.error)
    if (span !== undefined) {
      if (failure !== undefined) {
        span.setAttribute(ATTR.errorType, failure.type)
        if (failure.status !== undefined) span.setAttribute(ATTR.dbResponseStatusCode, failure.status)
        // The code, not the message: PostgreSQL quotes input values in some messages.
        span.setStatus({ code: SpanStatusCode.ERROR, message: failure.type })
      }
      span.end(endedAt)
    }
    if (this.#duration !== undefined) {
      const seconds = (endedAt - running.startedAt) / 1000
      let attributes: Attributes
      if (failure === undefined) {
        attributes = this.#succeeded.get(pool, summary, () => metricAttributes(pool, summary))
      } else {
        attributes = metricAttributes(pool, summary)
        attributes[ATTR.errorType] = failure.type
        if (failure.status !== undefined) attributes[ATTR.dbResponseStatusCode] = failure.status
      }
      this.#duration.record(seconds, attributes)
    }
  }
}

/**
 * Attributes built once per pool and summary, then shared: a statement sent again costs a
 * lookup, not an object. The SDK copies attributes, never changes them.
 */
class PerSummary {
  readonly #byPool = new WeakMap<PoolIdentity, WeakMap<QuerySummary, Attributes>>()

  get(pool: PoolIdentity, summary: QuerySummary, build: () => Attributes): Attributes {
    let bySummary = this.#byPool.get(pool)
    if (bySummary === undefined) {
      bySummary = new WeakMap()
      this.#byPool.set(pool, bySummary)
    }
    let attributes = bySummary.get(summary)
    if (attributes === undefined) {
      attributes = Object.freeze(build())
      bySummary.set(summary, attributes)
    }
    return attributes
  }
}

/**
 * The conventions' attributes of `db.client.operation.duration`, and the pool's name (not in
 * the conventions for this metric: it tells named instances on one database apart).
 */
function metricAttributes(pool: PoolIdentity, summary: QuerySummary): Attributes {
  const attributes: Attributes = { ...pool.server, ...pool.pool }
  if (summary.summary !== '') attributes[ATTR.dbQuerySummary] = summary.summary
  if (summary.operation !== undefined) attributes[ATTR.dbOperationName] = summary.operation
  return attributes
}

/** `{db.query.summary}`, else `{target}` (the database), else `postgresql`. */
function spanName(summary: QuerySummary, pool: PoolIdentity): string {
  if (summary.summary !== '') return summary.summary
  const namespace = pool.server[ATTR.dbNamespace]
  return typeof namespace === 'string' && namespace !== '' ? namespace : DB_SYSTEM_POSTGRESQL
}

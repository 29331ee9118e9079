import type { AcquireMessage, PgPoolView } from '@fastify-pg-pool/core'
import { context, type Span, SpanKind, SpanStatusCode, type Tracer } from '@opentelemetry/api'
import { ATTR, SPAN } from './attributes.js'
import { describeError } from './error-type.js'
import type { PoolIdentity } from './pool-identity.js'

/**
 * A span for each wait for a connection: the core publishes only the leases that had to wait,
 * with the queue's length when they joined it, so a lease served at once costs no span.
 */
export class AcquireSpans {
  readonly #tracer: Tracer
  readonly #pools: ReadonlyMap<PgPoolView, PoolIdentity>
  readonly #spans = new WeakMap<AcquireMessage, Span>()

  constructor(tracer: Tracer, pools: ReadonlyMap<PgPoolView, PoolIdentity>) {
    this.#tracer = tracer
    this.#pools = pools
  }

  start(message: AcquireMessage): void {
    const pool = this.#pools.get(message.pool)
    if (pool === undefined) return
    const span = this.#tracer.startSpan(
      SPAN.acquire,
      {
        kind: SpanKind.INTERNAL,
        attributes: { ...pool.both, [ATTR.acquireQueued]: message.queued, [ATTR.route]: message.route },
      },
      context.active(),
    )
    this.#spans.set(message, span)
  }

  end(message: AcquireMessage): void {
    const span = this.#spans.get(message)
    if (span === undefined) return
    this.#spans.delete(message)
    if (message.error !== undefined) {
      // FST_PG_POOL_ACQUIRE_TIMEOUT, _QUEUE_FULL, _ABORTED, _CLOSED, _CONNECT_FAILED
      const { type } = describeError(message.error)
      span.setAttribute(ATTR.errorType, type)
      span.setStatus({ code: SpanStatusCode.ERROR, message: type })
    }
    span.end()
  }
}

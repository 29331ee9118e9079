import type { PgPoolView, RefusalMessage } from '@fastify-pg-pool/core'
import { type Span, trace } from '@opentelemetry/api'
import { ATTR, REFUSAL_EVENT } from './attributes.js'
import type { PoolIdentity } from './pool-identity.js'

/** `@fastify/otel`'s request decorator, described by shape (it is optional here). */
interface OtelRequest {
  opentelemetry?: () => { span?: Span | null } | undefined
}

/** The refused request's own span: @fastify/otel's when it is there, else the active one. */
function requestSpan(request: unknown): Span | undefined {
  const decorator = (request as OtelRequest | null)?.opentelemetry
  if (typeof decorator === 'function') {
    const span = decorator.call(request)?.span
    if (span != null) return span
  }
  return trace.getActiveSpan()
}

/** Admission control's refusals, as an event on the refused request's span. */
export class RefusalEvents {
  readonly #pools: ReadonlyMap<PgPoolView, PoolIdentity>

  constructor(pools: ReadonlyMap<PgPoolView, PoolIdentity>) {
    this.#pools = pools
  }

  record(message: RefusalMessage): void {
    const pool = this.#pools.get(message.pool)
    if (pool === undefined) return
    requestSpan(message.request)?.addEvent(REFUSAL_EVENT, {
      ...pool.pool,
      [ATTR.refusalReason]: message.reason,
      [ATTR.route]: message.route,
    })
  }
}

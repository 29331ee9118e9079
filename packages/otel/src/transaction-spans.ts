import type { PgPoolView, QueryMessage, TransactionMessage } from '@fastify-pg-pool/core'
import { type Context, context, type Span, SpanKind, SpanStatusCode, type Tracer, trace } from '@opentelemetry/api'
import { ATTR, SPAN } from './attributes.js'
import { describeError } from './error-type.js'
import type { PoolIdentity } from './pool-identity.js'

interface OpenTransaction {
  readonly message: TransactionMessage
  readonly span: Span
}

/**
 * Transactions as spans (BEGIN → COMMIT/ROLLBACK, with the outcome), and which open transaction
 * a statement belongs to, so that its span is the transaction's child: the one the core names on
 * the statement's message. Spans start in the active context: the core publishes in the caller's,
 * and a waiter's hand-off in the waiter's own (pool.ts), never in the releasing request's.
 */
export class TransactionSpans {
  readonly #tracer: Tracer
  readonly #pools: ReadonlyMap<PgPoolView, PoolIdentity>
  readonly #open: OpenTransaction[] = []

  constructor(tracer: Tracer, pools: ReadonlyMap<PgPoolView, PoolIdentity>) {
    this.#tracer = tracer
    this.#pools = pools
  }

  start(message: TransactionMessage): void {
    const pool = this.#pools.get(message.pool)
    if (pool === undefined) return
    const active = context.active()
    const span = this.#tracer.startSpan(
      SPAN.transaction,
      {
        kind: SpanKind.INTERNAL,
        attributes: { ...pool.both, [ATTR.transactionKind]: message.kind, [ATTR.route]: message.route },
      },
      active,
    )
    this.#open.push({ message, span })
  }

  end(message: TransactionMessage): void {
    const at = this.#open.findIndex((open) => open.message === message)
    if (at === -1) return
    const { span } = this.#open[at] as OpenTransaction
    this.#open.splice(at, 1)
    const outcome = message.outcome ?? 'rollback'
    span.setAttribute(ATTR.transactionOutcome, outcome)
    // The client may not know whether it committed: never report that as plain success.
    if (outcome === 'commit_failed' || outcome === 'commit_unknown') {
      span.setAttribute(ATTR.errorType, outcome)
      const status = message.error === undefined ? undefined : describeError(message.error).status
      if (status !== undefined) span.setAttribute(ATTR.dbResponseStatusCode, status)
      span.setStatus({ code: SpanStatusCode.ERROR, message: outcome })
    }
    span.end()
  }

  /**
   * The context a statement's span starts in: its transaction's, which the core names on the
   * message (none named is none, though one of the same request is open: an `app.db` statement
   * inside a route transaction commits on its own and must not be drawn in a rolled-back one).
   */
  contextFor(message: QueryMessage): Context {
    const active = context.active()
    const own = message.transaction
    const open = own === undefined ? undefined : this.#open.find((entry) => entry.message === own)
    return open === undefined ? active : trace.setSpan(active, open.span)
  }

  /** Ends what is still open (the app closed mid-transaction). */
  close(): void {
    for (const open of this.#open.splice(0)) open.span.end()
  }
}

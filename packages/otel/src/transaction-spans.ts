import type { PgPoolView, QueryMessage, TransactionMessage } from '@fastify-pg-pool/core'
import { type Context, type Span, SpanKind, SpanStatusCode, type Tracer, trace } from '@opentelemetry/api'
import { ATTR, SPAN } from './attributes.js'
import { describeError } from './error-type.js'
import type { PoolIdentity } from './pool-identity.js'
import type { WaiterContexts } from './waiter-contexts.js'

interface OpenTransaction {
  readonly message: TransactionMessage
  readonly span: Span
  /** The span active when the transaction began (the request's, or its handler's). */
  readonly parent: Span | undefined
  readonly traceId: string | undefined
}

/** The statements the core sends to end a route transaction. */
const ENDINGS = new Set(['COMMIT', 'ROLLBACK'])

/**
 * Route transactions as spans (BEGIN → COMMIT/ROLLBACK, with the outcome), and which open
 * transaction a statement belongs to, so that its span is the transaction's child.
 *
 * A statement message does not name its transaction, so the match is made by context: a
 * statement whose active span is the one the transaction began under belongs to it (the
 * handler's queries, BEGIN). COMMIT and ROLLBACK run later, in an onSend hook whose span may
 * be another (`@fastify/otel` wraps hooks in spans of their own): they belong to the one open
 * transaction of their trace on their pool, when there is exactly one.
 */
export class TransactionSpans {
  readonly #tracer: Tracer
  readonly #pools: ReadonlyMap<PgPoolView, PoolIdentity>
  readonly #contexts: WaiterContexts
  readonly #open: OpenTransaction[] = []

  constructor(tracer: Tracer, pools: ReadonlyMap<PgPoolView, PoolIdentity>, contexts: WaiterContexts) {
    this.#tracer = tracer
    this.#pools = pools
    this.#contexts = contexts
  }

  start(message: TransactionMessage): void {
    const pool = this.#pools.get(message.pool)
    if (pool === undefined) return
    const active = this.#contexts.active(message.pool)
    const span = this.#tracer.startSpan(
      SPAN.transaction,
      {
        kind: SpanKind.INTERNAL,
        attributes: { ...pool.both, [ATTR.transactionKind]: message.kind, [ATTR.route]: message.route },
      },
      active,
    )
    const parent = trace.getSpan(active)
    this.#open.push({ message, span, parent, traceId: parent?.spanContext().traceId })
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

  /** The context a statement's span starts in: its transaction's when it has one open. */
  contextFor(message: QueryMessage, text: string): Context {
    const active = this.#contexts.active(message.pool)
    if (this.#open.length === 0) return active
    const open = this.#find(message, text, active)
    return open === undefined ? active : trace.setSpan(active, open.span)
  }

  #find(message: QueryMessage, text: string, active: Context): OpenTransaction | undefined {
    // Exact, should the core name the statement's transaction on the message.
    const own = (message as { readonly transaction?: TransactionMessage }).transaction
    if (own !== undefined) return this.#open.find((open) => open.message === own)
    const parent = trace.getSpan(active)
    if (parent === undefined) return undefined
    for (const open of this.#open) if (open.parent === parent && open.message.pool === message.pool) return open
    if (!ENDINGS.has(text)) return undefined
    const traceId = parent.spanContext().traceId
    let found: OpenTransaction | undefined
    for (const open of this.#open) {
      if (open.traceId !== traceId || open.message.pool !== message.pool) continue
      if (found !== undefined) return undefined // two in one trace: no guess
      found = open
    }
    return found
  }

  /** Ends what is still open (the app closed mid-transaction). */
  close(): void {
    for (const open of this.#open.splice(0)) open.span.end()
  }
}

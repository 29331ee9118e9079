import { channel } from 'node:diagnostics_channel'
import type { PgPoolView } from './types.js'

/**
 * What the core publishes for tracing and other observers, on Node's diagnostics channels: free
 * while nobody subscribes (each publish is guarded by `hasSubscribers`). Channels are global to
 * the process; every message names its pool (the read-only view), so a subscriber that serves
 * one app filters by identity. A start message and its end message are the same object: the end
 * adds the outcome, so a subscriber can keep per-operation state in a WeakMap keyed by it.
 *
 * Start messages are published synchronously in the caller's async context (the request's,
 * for `request.db`), so `AsyncLocalStorage`-based tracers find the active span there.
 * Messages never carry query parameters, and `text` is the statement with `$n` placeholders.
 */

/** A lease that had to wait for a connection (never published for one that got it at once). */
export interface AcquireMessage {
  readonly pool: PgPoolView
  /** Route template, or 'app.db' for work outside requests. */
  readonly route: string
  /** Leases already waiting when this one joined the queue. */
  readonly queued: number
  /** End: how long it waited, ms. */
  waitMs: number
  /** End: the coded error when it got no connection (timeout, queue full, aborted, closed, connect failed). */
  error: Error | undefined
}

/** One statement sent to the server on a lease. */
export interface QueryMessage {
  readonly pool: PgPoolView
  readonly route: string
  /** The statement as sent, `$1`.. for values; never parameter values. */
  readonly text: string
  /** The transaction it runs in (route transaction or `begin()`), when the suite runs one. */
  readonly transaction: TransactionMessage | undefined
  /** End: the command tag (`SELECT`, `INSERT`, ...) when it succeeded. */
  command: string | undefined
  /** End: rows returned or affected, when it succeeded. */
  rowCount: number | undefined
  /** End: what it failed with (a PostgreSQL error carries the SQLSTATE in `code`). */
  error: unknown
}

export type TransactionOutcome = 'commit' | 'rollback' | 'commit_failed' | 'commit_unknown'

/** A transaction the suite runs: a route's (`config.db.transaction`), `db.begin()`, `app.db.transaction()`. */
export interface TransactionMessage {
  readonly pool: PgPoolView
  readonly route: string
  readonly kind: 'route' | 'begin'
  /**
   * End: `commit_failed` when the server refused the COMMIT (or answered ROLLBACK);
   * `commit_unknown` when COMMIT was sent and no answer came (it may have committed).
   */
  outcome: TransactionOutcome | undefined
  error: Error | undefined
}

/** A request refused before it reached the pool (admission control, process pressure). */
export interface RefusalMessage {
  readonly pool: PgPoolView
  readonly route: string
  /** `queue_full`, `queue_delay`, `process`, ... (short snake_case). */
  readonly reason: string
  /** The Fastify request refused (its span is the one to annotate). */
  readonly request: unknown
}

export const channels = Object.freeze({
  acquireStart: channel('fastify-pg-pool:acquire:start'),
  acquireEnd: channel('fastify-pg-pool:acquire:end'),
  queryStart: channel('fastify-pg-pool:query:start'),
  queryEnd: channel('fastify-pg-pool:query:end'),
  transactionStart: channel('fastify-pg-pool:transaction:start'),
  transactionEnd: channel('fastify-pg-pool:transaction:end'),
  refusal: channel('fastify-pg-pool:refusal'),
})

/** Channel names, for subscribers that do not import this package. */
export const channelNames = Object.freeze({
  acquireStart: 'fastify-pg-pool:acquire:start',
  acquireEnd: 'fastify-pg-pool:acquire:end',
  queryStart: 'fastify-pg-pool:query:start',
  queryEnd: 'fastify-pg-pool:query:end',
  transactionStart: 'fastify-pg-pool:transaction:start',
  transactionEnd: 'fastify-pg-pool:transaction:end',
  refusal: 'fastify-pg-pool:refusal',
} as const)

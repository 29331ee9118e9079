import type * as postgres from 'postgres'
import type { ServerClient, TrackedQuery } from './postgres-adapter.js'
import { type SessionBaseline, underFailedReset } from './session-reset.js'

export type CloseReason = 'idle' | 'lifetime' | 'statements' | 'parameters' | 'error' | 'deadline' | 'shutdown'

/** What the pool and the leases need of one server connection (fakes implement it in unit tests). */
export interface PoolConnection {
  readonly id: number
  readonly createdAt: number
  /** When it retires (maxLifetime less jitter), on the pool's clock; Infinity for never. */
  readonly expiresAt: number
  idleSince: number
  leasedAt: number
  /**
   * Pipelined requests may not join it for now (a holder asks the server whether its session is
   * in a transaction block): more than 0 while such questions are open.
   */
  sharingPaused: number
  /** Resolves once those questions are answered (every holder's reply waits for it). */
  sharedProbe: Promise<void> | undefined
  readonly usable: boolean
  readonly closeReason: CloseReason | undefined
  /**
   * Its socket closed before the pool decided to close it (the server ended the session, a
   * network cut): what it held open (a transaction) is gone, and nothing of the holder's caused it.
   */
  readonly closedByPeer?: boolean
  /**
   * The server or the network closed it (a statement failed as a lost connection: 57P01, a reset
   * socket), unless the pool had decided to close it first (closedByPeer); marks it closed.
   */
  noteSocketClosed?(): void
  /**
   * A cancel request was sent and is still on its way: the connection must not serve another
   * holder, whose statement the cancel could stop. Only the request's own end proves it can land
   * no more (the server signals the backend, then closes the request's connection): a 57014 may
   * be another session's cancel (`pg_cancel_backend`) arriving first.
   */
  readonly cancelPending: boolean
  /** Resolves once no cancel request of this connection is on its way (at once when none is). */
  cancelSettled(): Promise<void>
  /** Statements that restore what `onConnect` set on this session (the reset runs them last). */
  readonly baseline: SessionBaseline | undefined
  /**
   * Sends a holder's statement. Behind a reset not answered yet, at most one statement that
   * could end the reset's transaction if it failed is written (session-reset.ts,
   * underFailedReset); the rest wait for the answer.
   */
  send(query: TrackedQuery): void
  /** Sends a cancel request for the statement running now; at most one is ever outstanding. */
  cancel(): void
  /**
   * Whether the server last reported itself a hot standby (`in_hot_standby`, PostgreSQL 14 and
   * later, reported at startup and on promotion); undefined when it never said.
   */
  reportsStandby?(): boolean | undefined
  /**
   * Whether the server reported, since keepReported(), another value for a parameter PgBouncer
   * keeps per client connection (REPLAYED_PARAMETERS).
   */
  reportedChanged?(): boolean
  /**
   * A statement of this connection ended; `preparedAnew`: it added a named statement that
   * postgres.js keeps on the session (`prepared`).
   */
  noteEnded(preparedAnew: boolean): void
  /**
   * When a statement on it last ended (noteEnded, or the session reset's answer), on the pool's
   * clock; 0 for never. The server runs a connection's statements in order: one written behind
   * others starts running no earlier than this (the statement deadline counts from there).
   */
  readonly answeredAt?: number
  /** Named statements postgres.js prepared on this session (one per distinct statement text). */
  readonly prepared: number
  /**
   * Queues the session reset, not awaited. A failure marks the connection closed and calls
   * `onFail` synchronously, before the answers of the statements queued behind the reset (which
   * the server refused) reach their holder; statements held for its answer (`send`) are then
   * dropped (their holder sends them again elsewhere), or fail as a lost connection when no
   * server answered.
   */
  queueReset(sql: string, onFail: (error: unknown) => void): void
  /** Marks it unusable; the first reason wins. */
  markClosed(reason: CloseReason): void
  /** Ends it: `graceSeconds: 0` rejects whatever is pending on it at once (see ServerClient.end). */
  end(reason: CloseReason, graceSeconds: number): Promise<void>
}

/**
 * The parameters PgBouncer (1.18) records per client connection from the server's reports and
 * sets again on whichever server connection it gives that client next, after its
 * server_reset_query: a holder's `SET TimeZone` outlives every reset behind PgBouncer on the
 * pool's connection (its `SET DateStyle` or `SET client_encoding` makes the next holder's values
 * read or stored as others). PgBouncer 1.20 and later also replays IntervalStyle by default
 * (`track_extra_parameters`), which the server reports too. Not search_path: PgBouncer tracks it
 * only when told to, and PostgreSQL 18 reports it, so a schema-per-tenant app's `SET search_path`
 * would retire a connection per request where PgBouncer's reset already undoes it.
 */
export const REPLAYED_PARAMETERS: readonly string[] = [
  'client_encoding',
  'DateStyle',
  'TimeZone',
  'standard_conforming_strings',
  'application_name',
  'IntervalStyle',
]

/** SQLSTATE query_canceled: a cancel request, statement_timeout or lock_timeout. */
export const QUERY_CANCELED = '57014'

let nextId = 1

const settled: Promise<void> = Promise.resolve()

/** A cancel request settling after this share of its timeout may have been given up, not answered. */
const CANCEL_GIVEN_UP = 0.9

/**
 * What postgres.js rejects a statement with when its connection is gone; here for one held
 * behind a reset and never written (`notSent`: it did not run, whatever it was).
 */
function lostConnection(): Error {
  return Object.assign(new Error('write CONNECTION_CLOSED'), { code: 'CONNECTION_CLOSED', notSent: true })
}

/**
 * One server connection: a postgres.js client with `max: 1`, leased whole. Each connection owns
 * its client, so no reserve() defect (porsager/postgres#1195, #1199, #1208) applies.
 */
export class ServerConnection implements PoolConnection {
  readonly id = nextId++
  readonly createdAt: number
  readonly expiresAt: number
  idleSince = 0
  leasedAt = 0
  sharingPaused = 0
  sharedProbe: Promise<void> | undefined = undefined
  closeReason: CloseReason | undefined
  baseline: SessionBaseline | undefined
  #cancelPending = false
  #closedByPeer = false
  #cancelSettled: Promise<void> = settled
  #ended: Promise<void> | undefined
  readonly #client: ServerClient
  /** Resets queued and not answered yet. */
  #resetsUnanswered = 0
  /** Behind the unanswered reset, a statement that could end its transaction was written. */
  #endingWritten = false
  /** Statements waiting for the reset's answer, in the order they came. */
  #heldForReset: TrackedQuery[] = []
  #prepared = 0
  #answeredAt = 0
  /** REPLAYED_PARAMETERS as the server reported them when the connection opened. */
  #reportedAtOpen: readonly (string | undefined)[] | undefined

  /** postgres.js gives a cancel request's connection up after this (its connect_timeout), ms. */
  readonly #cancelTimeoutMs: number
  /** The pool's clock (a fake one in unit tests). */
  readonly #now: () => number

  constructor(
    client: ServerClient,
    createdAt: number,
    expiresAt: number,
    cancelTimeoutMs = Number.POSITIVE_INFINITY,
    now: () => number = () => performance.now(),
  ) {
    this.#client = client
    this.createdAt = createdAt
    this.expiresAt = expiresAt
    this.#cancelTimeoutMs = cancelTimeoutMs
    this.#now = now
  }

  get pid(): number {
    return this.#client.pid
  }

  /** The client, for the pool's own statements outside any lease (budget, ping). */
  get sql(): postgres.Sql<{}> {
    return this.#client.sql
  }

  get usable(): boolean {
    return this.closeReason === undefined
  }

  get cancelPending(): boolean {
    return this.#cancelPending
  }

  send(query: TrackedQuery): void {
    if (this.#resetsUnanswered > 0 && this.#holdForReset(query)) this.#heldForReset.push(query)
    else this.#sendBuilt(query)
  }

  /**
   * Hands a query to the driver. One it could not build behind another statement stays in the
   * driver's queue unanswered (it fails, on its own): the connection is retired, nothing more is
   * sent on it, and what runs on it now ends as it would.
   */
  #sendBuilt(query: TrackedQuery): void {
    if (this.#client.send(query) === false) this.markClosed('error')
  }

  /**
   * Behind a reset not answered yet: if it failed, PostgreSQL would run a statement that may end
   * its aborted transaction, and everything written after it, on a session nobody cleaned. So one
   * such statement at a time, none that may hold several, and nothing ahead of what waits.
   */
  #holdForReset(query: TrackedQuery): boolean {
    if (this.#heldForReset.length > 0) return true
    const kind = underFailedReset(query)
    if (kind === 'refused') return false
    if (kind === 'may-end-and-continue' || this.#endingWritten) return true
    this.#endingWritten = true
    return false
  }

  reportsStandby(): boolean | undefined {
    const reported = this.#client.sql.parameters.in_hot_standby
    return reported === undefined ? undefined : reported === 'on'
  }

  /** Takes the opened session's REPLAYED_PARAMETERS for reportedChanged(). */
  keepReported(): void {
    const reported = this.#client.sql.parameters as Record<string, string | undefined>
    this.#reportedAtOpen = REPLAYED_PARAMETERS.map((name) => reported[name])
  }

  reportedChanged(): boolean {
    const reported = this.#client.sql.parameters as Record<string, string | undefined>
    return this.#reportedAtOpen?.some((value, i) => reported[REPLAYED_PARAMETERS[i] as string] !== value) === true
  }

  cancel(): void {
    if (this.#cancelPending || !this.usable) return
    this.#cancelPending = true
    // Settled when the server closed the request's connection, after signalling the backend; or
    // when it failed, the request never having reached the server: nothing can land later. But
    // postgres.js settles it the same way when it gives the request up at its connect_timeout, the
    // request perhaps still on its way (an overloaded server): proven by nothing, the connection
    // retires.
    const sentAt = this.#now()
    const settle = () => {
      if (this.#now() - sentAt >= this.#cancelTimeoutMs * CANCEL_GIVEN_UP) this.markClosed('error')
      this.#cancelPending = false
    }
    this.#cancelSettled = this.#client.cancel().then(settle, settle)
  }

  cancelSettled(): Promise<void> {
    return this.#cancelPending ? this.#cancelSettled : settled
  }

  get answeredAt(): number {
    return this.#answeredAt
  }

  noteEnded(preparedAnew: boolean): void {
    this.#answeredAt = this.#now()
    if (preparedAnew) this.#prepared++
  }

  get prepared(): number {
    return this.#prepared
  }

  queueReset(sql: string, onFail: (error: unknown) => void): void {
    this.#resetsUnanswered++
    this.#client.sendNow(sql, (error) => {
      this.#answeredAt = this.#now()
      this.#resetsUnanswered--
      if (error === undefined) {
        if (this.#resetsUnanswered === 0) this.#releaseHeld()
        return
      }
      // Refused by the server: the pool closes it. Lost (no answer): its peer closed it, as a
      // route transaction's COMMIT behind it tells (closedByPeer: the retryable 503).
      const refused = (error as { severity?: unknown } | null)?.severity !== undefined
      if (refused) this.markClosed('error')
      else this.noteSocketClosed()
      const held = this.#heldForReset
      this.#heldForReset = []
      this.#endingWritten = false
      // Only the server's refusal proves that nothing queued behind the reset ran: a lost
      // connection says nothing about it, and fails its statements as a lost connection.
      if (refused) {
        // Their holders send them again on another connection, as what was written behind it.
        onFail(error)
        return
      }
      for (const query of held) query.reject(lostConnection())
    })
  }

  /** The reset was answered and succeeded: what waited for it is written, in order. */
  #releaseHeld(): void {
    this.#endingWritten = false
    if (this.#heldForReset.length === 0) return
    const held = this.#heldForReset
    this.#heldForReset = []
    for (const query of held) {
      if (this.usable) this.#sendBuilt(query)
      else query.reject(lostConnection())
    }
  }

  markClosed(reason: CloseReason): void {
    this.closeReason ??= reason
  }

  get closedByPeer(): boolean {
    return this.#closedByPeer
  }

  /** postgres.js says the socket closed: by the other side, unless the pool had closed it first. */
  noteSocketClosed(): void {
    if (this.closeReason === undefined) this.#closedByPeer = true
    this.markClosed('error')
  }

  end(reason: CloseReason, graceSeconds: number): Promise<void> {
    this.markClosed(reason)
    this.#ended ??= this.#client.end(graceSeconds)
    return this.#ended
  }
}

/** A tracked query's connection, as the lease sees it. */
export type QueryConnection = Pick<PoolConnection, 'send' | 'cancel' | 'noteEnded'>

export type { TrackedQuery }

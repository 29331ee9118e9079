import type { TimerHandle } from '../src/clock.js'
import type { ConnectionFactory } from '../src/connection-factory.js'
import { type AdapterQuery, queryText } from '../src/postgres-adapter.js'
import type { CloseReason, PoolConnection } from '../src/server-connection.js'
import type { SessionBaseline } from '../src/session-reset.js'
import type { FakeClock } from './fake-clock.js'

/** A PostgreSQL error as postgres.js rejects with it (a server answer: it has a severity). */
export function serverError(code: string, message = `error ${code}`): Error {
  return Object.assign(new Error(message), { name: 'PostgresError', severity: 'ERROR', code })
}

/** A connection-level error as postgres.js rejects with it (no server answer). */
export function connectionError(code = 'CONNECTION_CLOSED'): Error {
  return Object.assign(new Error(`write ${code}`), { code })
}

/** What a query resolves with in postgres.js: rows with a command tag and a count. */
export function result(command: string, rows: object[] = []): unknown[] {
  return Object.assign([...rows], { command, count: rows.length })
}

/**
 * A PoolConnection with no server behind it: it records what is sent on it, in order, and the
 * test answers each statement (`answer`/`fail`) as postgres.js would (`query.resolve/reject`).
 * Its cancel rule is ServerConnection's: one cancel outstanding at most, on its way until the
 * test says the request ended (`cancelAnswered`, `cancelLost`), whatever the statements end with.
 */
export class FakeConnection implements PoolConnection {
  readonly id: number
  readonly createdAt: number
  expiresAt: number
  idleSince = 0
  leasedAt = 0
  sharingPaused = 0
  sharedProbe: Promise<void> | undefined = undefined
  closeReason: CloseReason | undefined
  /** Set by noteSocketClosed(): the server or the network closed it, not the pool. */
  closedByPeer = false
  /** What onConnect left on the session, restored by the reset (none here unless a test sets it). */
  baseline: SessionBaseline | undefined = undefined
  /** What reached the wire, in order: reset statements as they are, queries by their text. */
  readonly wire: string[] = []
  /** Queries sent, in order. */
  readonly sent: AdapterQuery[] = []
  /** Reset statements queued, in order. */
  readonly resets: string[] = []
  /** Cancel requests sent (a call while one is outstanding sends none). */
  cancels = 0
  /** Every end() call: why, and the grace it was given. */
  readonly ends: { reason: CloseReason; graceSeconds: number }[] = []
  /** Settled once the connection is gone (end() finished). */
  closed = false
  readonly #clock: FakeClock
  readonly #pending = new Set<AdapterQuery>()
  #onResetFail: ((error: unknown) => void) | undefined
  #cancelPending = false
  #ended: Promise<void> | undefined

  constructor(clock: FakeClock, id: number, expiresAt = Number.POSITIVE_INFINITY) {
    this.#clock = clock
    this.id = id
    this.createdAt = clock.now()
    this.expiresAt = expiresAt
  }

  get usable(): boolean {
    return this.closeReason === undefined
  }

  get cancelPending(): boolean {
    return this.#cancelPending
  }

  /** Queries sent and not answered yet. */
  get pending(): AdapterQuery[] {
    return [...this.#pending]
  }

  send(query: AdapterQuery): void {
    this.sent.push(query)
    this.wire.push(queryText(query))
    if (this.closed) {
      // postgres.js rejects what is sent on a closed connection.
      query.reject(connectionError('CONNECTION_DESTROYED'))
      return
    }
    this.#pending.add(query)
  }

  /** Answers a sent query (default: the oldest unanswered) with `value`. */
  answer(value: unknown = result('SELECT'), query: AdapterQuery | undefined = this.pending[0]): void {
    if (query === undefined || !this.#pending.delete(query)) throw new Error(`connection ${this.id}: nothing to answer`)
    query.resolve(value)
    this.#settledOne()
  }

  /** Fails a sent query (default: the oldest unanswered) with `error`. */
  fail(error: unknown, query: AdapterQuery | undefined = this.pending[0]): void {
    if (query === undefined || !this.#pending.delete(query)) throw new Error(`connection ${this.id}: nothing to fail`)
    query.reject(error)
    this.#settledOne()
  }

  cancel(): void {
    if (this.#cancelPending || !this.usable) return
    this.#cancelPending = true
    this.cancels++
    this.#cancelSettled = new Promise((resolve) => {
      this.#settleCancel = resolve
    })
  }

  /** The server closed the cancel request's connection, having signalled the backend (its promise resolved). */
  cancelAnswered(): void {
    this.#cancelPending = false
    this.#settleCancel?.()
  }

  /** The cancel request never reached the server (ServerConnection: its promise rejected). */
  cancelLost(): void {
    this.cancelAnswered()
  }

  cancelSettled(): Promise<void> {
    return this.#cancelPending ? this.#cancelSettled : Promise.resolve()
  }

  #cancelSettled: Promise<void> = Promise.resolve()
  #settleCancel: (() => void) | undefined

  /** Named statements "prepared" on it (noteEnded's argument). */
  prepared = 0

  noteEnded(preparedAnew: boolean): void {
    if (preparedAnew) this.prepared++
  }

  queueReset(sql: string, onFail: (error: unknown) => void): void {
    this.resets.push(sql)
    this.wire.push(sql)
    this.#onResetFail = onFail
  }

  /**
   * The server refused the last reset queued: the connection is marked closed and the pool told
   * synchronously, before the answers of the statements queued behind it (the contract of
   * PoolConnection.queueReset).
   */
  failReset(error: unknown = serverError('25P02', 'current transaction is aborted')): void {
    const onFail = this.#onResetFail
    if (onFail === undefined) throw new Error(`connection ${this.id}: no reset queued`)
    this.#onResetFail = undefined
    this.markClosed('error')
    onFail(error)
  }

  markClosed(reason: CloseReason): void {
    this.closeReason ??= reason
  }

  /** The server ended the session (or the network cut it) while nothing was in flight. */
  noteSocketClosed(): void {
    if (this.closeReason === undefined) this.closedByPeer = true
    this.markClosed('error')
  }

  /**
   * As postgres.js's `sql.end({ timeout })`: with a grace, waits that long (on the clock) for
   * the queries sent to be answered, then destroys the socket, rejecting what is left.
   */
  end(reason: CloseReason, graceSeconds: number): Promise<void> {
    this.ends.push({ reason, graceSeconds })
    this.markClosed(reason)
    this.#ended ??= new Promise<void>((resolve) => {
      this.#whenGone = resolve
      if (graceSeconds <= 0 || this.#pending.size === 0) this.#destroy()
      else this.#graceTimer = this.#clock.setTimeout(() => this.#destroy(), graceSeconds * 1000)
    })
    if (graceSeconds <= 0 && !this.closed) this.#destroy()
    return this.#ended
  }

  #whenGone: (() => void) | undefined
  #graceTimer: TimerHandle | undefined

  #settledOne(): void {
    if (this.#ended !== undefined && !this.closed && this.#pending.size === 0) this.#destroy()
  }

  #destroy(): void {
    if (this.closed) return
    this.closed = true
    this.#clock.clearTimeout(this.#graceTimer)
    const left = [...this.#pending]
    this.#pending.clear()
    for (const query of left) query.reject(connectionError('CONNECTION_DESTROYED'))
    this.#whenGone?.()
  }
}

/** How the next opening goes. */
export interface OpenPlan {
  /** Fails with this error (after `delayMs`). */
  readonly error?: unknown
  /** On the fake clock; 0 settles at once (in a microtask). */
  readonly delayMs?: number
  /** Stays pending until the test settles it through `factory.held`. */
  readonly hold?: boolean
}

/** An opening the test settles itself (`hold: true`). */
export interface HeldOpening {
  readonly signal: AbortSignal
  succeed(): FakeConnection
  fail(error?: unknown): void
}

/** A refused TCP connection, as the driver reports it. */
export function refused(): Error {
  return Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })
}

/**
 * Opens FakeConnections on a FakeClock. Each opening follows the next scripted plan (`script`,
 * `failNext`), else `defaultPlan` (open at once). An aborted opening (the pool is closing) fails
 * with CONNECTION_ENDED at once.
 */
export class FakeFactory {
  readonly clock: FakeClock
  /** Retirement age of the connections it opens (the real factory jitters it; tests need exact). */
  lifetimeMs = Number.POSITIVE_INFINITY
  defaultPlan: OpenPlan = {}
  readonly script: OpenPlan[] = []
  /** Every connection opened, in order. */
  readonly connections: FakeConnection[] = []
  /** Clock time of every attempt, in order. */
  readonly attempts: number[] = []
  /** Openings left pending (`hold: true`), oldest first. */
  readonly held: HeldOpening[] = []
  /** Openings aborted by the pool. */
  aborted = 0
  /** Openings in flight now. */
  inFlight = 0
  #ids = 0

  constructor(clock: FakeClock) {
    this.clock = clock
  }

  /** The next `count` openings fail with `error`. */
  failNext(count: number, error: unknown = refused()): this {
    for (let i = 0; i < count; i++) this.script.push({ error })
    return this
  }

  /** The connection opened last. */
  get last(): FakeConnection {
    const conn = this.connections.at(-1)
    if (conn === undefined) throw new Error('no connection opened')
    return conn
  }

  readonly open: ConnectionFactory = (signal) => {
    this.attempts.push(this.clock.now())
    const plan = this.script.shift() ?? this.defaultPlan
    this.inFlight++
    return new Promise<FakeConnection>((resolve, reject) => {
      let done = false
      let timer: TimerHandle | undefined
      const settle = (error: unknown): FakeConnection | undefined => {
        if (done) return undefined
        done = true
        this.inFlight--
        this.clock.clearTimeout(timer)
        signal.removeEventListener('abort', onAbort)
        if (error !== undefined) {
          reject(error)
          return undefined
        }
        const conn = new FakeConnection(this.clock, ++this.#ids, this.clock.now() + this.lifetimeMs)
        this.connections.push(conn)
        resolve(conn)
        return conn
      }
      const onAbort = () => {
        this.aborted++
        settle(Object.assign(new Error('the pool is closing'), { code: 'CONNECTION_ENDED' }))
      }
      signal.addEventListener('abort', onAbort, { once: true })
      if (plan.hold) {
        this.held.push({
          signal,
          succeed: () => {
            const conn = settle(undefined)
            if (conn === undefined) throw new Error('opening already settled')
            return conn
          },
          fail: (error = refused()) => void settle(error),
        })
        return
      }
      const finish = () => void settle(plan.error)
      const delay = plan.delayMs ?? 0
      if (delay > 0) timer = this.clock.setTimeout(finish, delay)
      else finish()
    })
  }
}

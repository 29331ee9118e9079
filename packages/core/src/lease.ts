import { AsyncLocalStorage } from 'node:async_hooks'
import type { Readable } from 'node:stream'
import type { Clock, TimerHandle } from './clock.js'
import { commitConnectionLost, commitFailure, commitLost } from './commit-outcome.js'
import { channels, type QueryMessage, type TransactionMessage, type TransactionOutcome } from './diagnostics.js'
import {
  type FailureContext,
  isConnectionError,
  isPostgresError,
  type SurfaceSettings,
  surfaceError,
  withCause,
  withRetryAfter,
} from './error-mapping.js'
import { errors } from './errors.js'
import type { Lsn } from './lsn.js'
import type { ResolvedPoolOptions } from './options.js'
import type { Holder, Pool } from './pool.js'
import {
  type AdapterQuery,
  abandonCopy,
  commandsOf,
  copyOutEnded,
  leftSocketPaused,
  leftUnreadable,
  mayHoldSeveral,
  preparedAnew,
  type QueryOwner,
  queryText,
  type RawRow,
  rawText,
  resultOf,
  resumeFailedCopy,
  statementsIn,
  type TrackedQuery,
  type TrackedQueryConstructor,
} from './postgres-adapter.js'
import type { PoolConnection } from './server-connection.js'
import { resetStatement, TransactionState } from './session-reset.js'
import type { PgPoolView } from './types.js'
import { CURRENT_LSN_SQL, lsnOf, wroteIn } from './write-position.js'

/**
 * How long an aborted lease's statements get to end (a cancel request normally stops a running
 * statement in a few ms) before its connection is cut: the lease comes back within 100 ms of the
 * abort even when the server does not answer, or a cursor waits on the handler's own loop.
 */
export const ABORT_GRACE_MS = 50

/**
 * How long an aborted lease lets a running statement end on its own before it sends a cancel
 * request. Most statements take less: they end without one, and their connection goes back to
 * the pool. A cancel that arrives after its statement ended would have to retire the connection
 * (it could stop the next holder's statement), so sending none keeps the pool from churning
 * connections under client hang-ups. Well inside the 100 ms the lease has to come back in.
 */
export const CANCEL_DELAY_MS = 5

/** What every lease of one plugin instance shares. */
export interface LeaseContext {
  readonly pool: Pool
  readonly clock: Clock
  readonly options: ResolvedPoolOptions
  readonly Query: TrackedQueryConstructor
  /** How failed statements reach callers (error-mapping.ts). */
  readonly surface: SurfaceSettings
  /** The pool's view, named in diagnostics messages. */
  readonly view: () => PgPoolView
  /** A lease was held past leakDetectionThreshold. */
  readonly onLeak: (lease: Lease, heldMs: number) => void
  /**
   * Reads routed to the primary (no replica usable): the session is made read-only, so that a
   * write fails loudly (25006) instead of going to the primary.
   */
  readonly readOnly?: boolean
  /** The instance's primary, taking writes: a 25006 there means it is no longer the primary. */
  readonly writable?: boolean
  /** Read-your-writes: learn the WAL position of what a holder wrote (`commitLsn`). */
  readonly captureLsn?: boolean
  /**
   * The application_name a lease's session shows while it holds the connection (a trace's
   * traceparent and route, for pg_stat_activity), or undefined to keep the pool's.
   */
  readonly leaseApplicationName?: ((request: unknown, route: string) => string | undefined) | undefined
  /**
   * A replica's, for the reads routed to it: where a read goes when no connection to the replica
   * can be opened (it went down since its last lag sample), before any of its statements was sent:
   * the primary, read-only. A read is never failed because a replica is down.
   */
  readonly fallback?: (() => LeaseContext) | undefined
}

export type FinishMode = 'commit' | 'rollback' | 'abort'

export interface LeaseSettings {
  /** Route template (or 'app.db') for release events, diagnostics and leak warnings. */
  readonly route: string
  /** The request holding the lease (opaque here; for leak warnings). */
  readonly request?: unknown
  /** BEGIN statement when the whole lease is one transaction (a route transaction). */
  readonly begin?: string | undefined
  /**
   * Share a connection with other pipelined holders (`config.db.pipeline`): statements queue
   * on it behind theirs; no transaction blocks; in-flight statements are never cancelled.
   */
  readonly pipelined?: boolean
  /** Release as soon as the first statement settles (app.db one-shot queries). */
  readonly oneShot?: boolean
  /** Reads only: routed to a replica when one is usable (see `target`). */
  readonly readOnly?: boolean
  /**
   * Which pool serves the lease, decided on its first statement (read routing: a replica, or
   * the primary; read-your-writes may wait for a replica to catch up). Default: the context's.
   */
  readonly target?: (() => LeaseContext | Promise<LeaseContext>) | undefined
  /**
   * Runs when the lease gets its connection (after the route's BEGIN), before any of the
   * holder's statements; its own statements are built with `setup: true`.
   */
  readonly onLease?: ((lease: Lease) => Promise<void>) | undefined
}

type Phase = 'open' | 'finishing' | 'done'

/** A statement waiting behind the holder's running one, and the async context it was sent in. */
interface Queued {
  readonly query: TrackedQuery
  readonly resume: ((fn: () => void) => void) | undefined
}

// postgres.js calls these with the query; one pair for every lease, not two closures each.
function dispatchQuery(query: AdapterQuery): void {
  const tracked = query as TrackedQuery
  ;(tracked.owner as Lease).dispatch(tracked)
}
function cancelQuery(query: AdapterQuery): unknown {
  const tracked = query as TrackedQuery
  return (tracked.owner as Lease).cancelQuery(tracked)
}

/** What finish() returns when nothing was left to wait for. */
export const finished: Promise<void> = Promise.resolve()

/**
 * One holder's view of one connection: leased on the first statement, returned exactly once,
 * when the holder is finished and every statement it sent has ended. It owns what is specific
 * to a holder: its statements, its route transaction, onLease, aborting (cancel or cut), and
 * which reset its connection owes the next holder.
 */
export class Lease implements Holder, QueryOwner {
  readonly settings: LeaseSettings
  readonly route: string
  waitSince = 0
  waitMessage: Holder['waitMessage'] = undefined
  resume: Holder['resume'] = undefined
  #ctx: LeaseContext
  /** The target was resolved (or there is none). */
  #targeted: boolean
  /** Resolving the target (waiting for a replica to catch up). */
  #choosing = false
  /** Read-your-writes: the WAL position after this holder's writes, once known. */
  #commitLsn: Lsn | undefined
  /** A statement of the holder's wrote (by its command tag). */
  #wrote = false
  #phase: Phase = 'open'
  #mode: FinishMode | undefined
  #conn: PoolConnection | undefined
  #waiting = false
  /** Statements sent on the connection and not ended, in the order sent. */
  readonly #inflight = new Set<TrackedQuery>()
  /** Streams of COPY TO STDOUT statements that ended with rows still unread (copyOutEnded). */
  #unreadCopies: Set<Readable> | undefined
  /** Statements waiting for a connection (allocated when one has to wait). */
  #pending: TrackedQuery[] | undefined
  /** The holder's statements waiting for onLease to finish. */
  #held: TrackedQuery[] | undefined
  /**
   * The async context a statement was sent in, when it had to wait before going to the server
   * (no connection yet, onLease preparing it, a block check): its start is published there, so
   * that its span is a child of the span its caller had open, not of whichever sent it on.
   */
  #sentFrom: WeakMap<TrackedQuery, (fn: () => void) => void> | undefined
  /**
   * Statements waiting for the holder's statement on the server to end: outside a transaction
   * a holder has one statement at a time there (see #oneAtATime), and whatever comes after a
   * waiting one waits too, so that statements run in the order they were sent.
   */
  #queued: Queued[] | undefined
  /** The holder's own statements (not the pool's) sent and not ended. */
  #holderRunning = 0
  /**
   * Statements the holder cancelled before postgres.js handed them to the lease (it runs a query
   * a microtask after it is awaited): refused when they arrive.
   */
  #cancelledEarly: Set<TrackedQuery> | undefined
  /** Statements whose holder cancelled them behind another still running (cancelQuery). */
  #cancelWhenFirst: Set<TrackedQuery> | undefined
  /**
   * Statements of the holder's own `.cancel()` whose cancel request was sent: not sent again after
   * a failed reset (reroute), which that cancel request may be what stopped.
   */
  #cancelSent: WeakSet<TrackedQuery> | undefined
  /** Statements sent again after a failed session reset, by the query their holder holds. */
  #rerouted: Map<TrackedQuery, TrackedQuery> | undefined
  /** The holder's begin() blocks waiting for onLease to have prepared the connection. */
  #readyWaiters: { resolve: () => void; reject: (error: unknown) => void }[] | undefined
  #preparing = false
  #setupError: unknown
  #ranStatements = false
  readonly #transaction = new TransactionState()
  /** The route transaction: its BEGIN was sent. */
  #routeTransaction = false
  /** A `begin()` block is open. */
  #block = false
  /** leftBlockOpen() asked: the reply is decided, the holder's statements are refused. */
  #replied = false
  /** A `begin()` block's COMMIT is out: resolves with what it failed with (undefined: committed). */
  #blockCommit: Promise<Error | undefined> | undefined
  #blockFailure: Error | undefined
  /** leftBlockOpen() found a block the holder opened in SQL still open. */
  #leftOpen = false
  /**
   * The `begin()` block whose callback runs (its token: the handle it gave the callback built its
   * statements with), and whether onLease opened it. Only that handle's statements run while it is
   * open; a block's handle is refused once its block has ended.
   */
  #openBlock: object | undefined
  #openBlockSetup = false
  /**
   * The savepoint() callbacks running, innermost last (their handles' tokens, and the block each
   * was opened in): while one runs, only its handle's statements are sent, as in a block. Another
   * would run inside the savepoint and be rolled back with it.
   */
  readonly #savepoints: {
    readonly token: object
    readonly parent: object | undefined
    settled: boolean
    /** Opened inside a savepoint whose callback has settled (left running): it no longer counts. */
    orphaned: boolean
  }[] = []
  /** The open block's callback has settled: its COMMIT or ROLLBACK is sent or about to be. */
  #blockSettled = false
  /**
   * A statement of the holder's ended the route transaction or the `begin()` block (its command
   * tag: COMMIT, ROLLBACK, PREPARE TRANSACTION): its later statements are refused with this, and
   * the block the pool opened is rolled back instead of committed (what ran after it would have
   * run outside, one transaction each).
   */
  #endedInSql: Error | undefined
  /**
   * SAVEPOINTs the holder's own SQL opened in the block (RELEASE and ROLLBACK TO may drop several:
   * an upper bound; Infinity, unknown, after a message of several statements). While one may be
   * open, a ROLLBACK may be ROLLBACK TO (the same tag): the server is asked (#checkBlock).
   */
  #sqlSavepoints = 0
  /** The question whether the pool's block is still open, while it is out (#checkBlock). */
  #blockCheck: BlockCheck | undefined
  /** The block is read-only by its BEGIN: a 25006 in it is the holder's, not a failover. */
  #blockReadOnly = false
  #transactionMessage: TransactionMessage | undefined
  /** How the route transaction ended, once it has: an abort may come while its COMMIT is out. */
  #routeOutcome: TransactionOutcome | undefined
  #finishing: Promise<void> | undefined
  /** Called once the lease starts to end, whoever ends it (onEnding). */
  #onEnding: (() => void)[] | undefined
  #whenIdle: (() => void) | undefined
  #abortTimer: TimerHandle | undefined
  /** Cursors waiting on their callback: stopped when the lease is aborted. */
  #cursorWaits: Set<(error: unknown) => void> | undefined

  constructor(ctx: LeaseContext, settings: LeaseSettings) {
    this.#ctx = ctx
    this.#targeted = settings.target === undefined
    this.settings = settings
    this.route = settings.route
    // The async context it was made in, for what the pool later does for it inside another's (a
    // hand-off after a wait, a reroute after a failed reset, a fallback after a failed wait), when
    // something reads that context: its callbacks (onLease, leaseApplicationName) or a tracer.
    const callsBack = ctx.leaseApplicationName !== undefined || settings.onLease !== undefined
    if (callsBack || channels.queryStart.hasSubscribers || channels.acquireEnd.hasSubscribers) {
      this.resume = AsyncLocalStorage.snapshot()
    }
  }

  /**
   * Shares its connection (a pipelined route). Not a read served by the primary: making it
   * read-only takes a session (or a transaction) of its own.
   */
  get pipelined(): boolean {
    return this.settings.pipelined === true && this.#ctx.readOnly !== true
  }

  get inTransaction(): boolean {
    return this.settings.begin !== undefined
  }

  /**
   * A `begin()` block of the holder's is open and its callback has not settled (a reply sent
   * inside it, a `begin()` not awaited): neither its COMMIT nor its ROLLBACK is on its way.
   */
  get openBegin(): boolean {
    return (this.#block && !this.#blockSettled && !this.#openBlockSetup) || this.#blockCommit !== undefined
  }

  /** What a `begin()` block whose COMMIT was out when the reply was decided failed with (leftBlockOpen). */
  get blockFailure(): Error | undefined {
    return this.#blockFailure
  }

  /**
   * Whether `value` is the stream of a COPY TO STDOUT of this lease that still runs, or may read
   * from one: a web stream or Response (which wraps it beyond recognition) while one runs.
   */
  runsCopyInto(value: unknown, wrapped = false): boolean {
    for (const query of this.#inflight) {
      const stream = query.stream
      if (stream === undefined) continue
      if (stream === value || (wrapped && !('writableEnded' in stream))) return true
    }
    // Ended on the server, its rows still in the stream: refused the same, whatever the timing.
    for (const stream of this.#unreadCopies ?? []) {
      if (!stream.readableEnded && (stream === value || wrapped)) return true
    }
    return false
  }

  /** The route's own transaction is read-only: a 25006 in it is the holder's, not a failover. */
  get #readOnlyTransaction(): boolean {
    return beginsReadOnly(this.settings.begin) || (this.#block && this.#blockReadOnly)
  }

  /**
   * The open block is onLease's own: a holder's block starts only once onLease is done
   * (#whenPrepared), so a block open while onLease runs is the hook's.
   */
  get #onLeaseBlock(): boolean {
    return this.#block && this.#preparing
  }

  /**
   * A pipelined holder: the question about a transaction block pending on its shared connection
   * (its own or another holder's), which its reply waits for; undefined when none is.
   */
  sharedProbe(): Promise<void> | undefined {
    return this.pipelined ? this.#conn?.sharedProbe : undefined
  }

  get finished(): boolean {
    return this.#mode !== undefined
  }

  /**
   * A request whose own statements may have opened a transaction block in SQL (their command tags
   * said `BEGIN`, `COMMIT`, `SAVEPOINT`..., or a statement failed without saying which of its
   * statements ran): whether the session is inside a block now, asked before its reply goes. Such
   * a block is rolled back when the connection goes back, so its 2xx would be a success for work
   * that is not committed: true when the open block wrote (or failed). Undefined when there is
   * nothing to ask (no such tag, a route transaction or a `begin()` block of the pool's own, a
   * shared session, no connection). A `begin()` block whose callback has not settled (openBegin)
   * is asked about the same way: the lease's end cuts it short and rolls it back.
   */
  leftBlockOpen(): Promise<boolean> | undefined {
    if (this.#routeTransaction || this.pipelined) return undefined
    const commit = this.#blockCommit
    if (commit !== undefined) {
      // A begin() block's COMMIT is out (its callback settled just before the reply): a 2xx holds
      // only if it commits; otherwise the reply is what the block failed with (blockFailure).
      this.#replied = true
      return commit.then((failure) => {
        this.#blockFailure = failure
        return failure !== undefined
      })
    }
    if (this.#block ? !this.openBegin : !this.#transaction.mayBeOpen) return undefined
    if (this.#conn === undefined || this.#mode !== undefined) return undefined
    // The reply is decided: a statement of the holder's sent while the question is out (the rest
    // of a begin() callback) would not be in the answer, and is refused as after the lease's end.
    this.#replied = true
    // Any failure answers "in a block": 25P02 is an aborted one, and a lost connection took the
    // block with it.
    const found = (open: boolean) => {
      // Rolled back when the connection goes back, in every reset mode ('never' included): the
      // reply says it was, and the next holder's statements must not run inside it.
      if (open) this.#leftOpen = true
      return open
    }
    // A begin() block opened READ ONLY wrote nothing, whatever the question answers (a failed
    // statement aborted it: 25P02): its reply is left as it is.
    const readOnly = this.#block && this.#blockReadOnly
    const probe = this.#ownQuery(LEFT_OPEN_PROBE)
    this.#leftOpenProbe = probe
    this.dispatch(probe)
    return (Promise.prototype.then.call(probe, (x: unknown) => x) as Promise<unknown>).then(
      (rows) => {
        const [row] = rows as RawRow[]
        const inBlock = rawText(row?.[0]) !== 'f'
        // A block that wrote nothing loses nothing (`COMMIT AND CHAIN`, `commit; begin`: what came
        // before committed): rolled back all the same, the reply is left as it is.
        found(inBlock)
        return inBlock && rawText(row?.[1]) !== 'f'
      },
      () => found(true) && !readOnly,
    )
  }

  /**
   * A route transaction the pool ended without its COMMIT before the reply was decided (the pool
   * closing past closeTimeout, a handlerTimeout), or a pipelined holder whose shared session got a
   * transaction block (its work may be rolled back with it): the error the reply goes out with
   * instead of its 2xx. Undefined otherwise (no route transaction, not ended, or ended to commit).
   */
  notCommitted(): Error | undefined {
    if (this.#openedShared !== undefined) return this.#openedShared
    if (!this.inTransaction || this.#mode === undefined) return undefined
    // Ended: by what happened (an abort that came while the COMMIT was out did not undo it);
    // ending: by what it will do.
    if ((this.#routeOutcome ?? (this.#mode === 'commit' ? 'commit' : 'rollback')) === 'commit') return undefined
    const error = this.#ctx.pool.stats().accepting ? new errors.FST_PG_POOL_ABORTED() : new errors.FST_PG_POOL_CLOSED()
    return withRetryAfter(error, this.#ctx.options.retryAfter)
  }

  get #busy(): boolean {
    return (
      this.#inflight.size > 0 ||
      (this.#pending?.length ?? 0) > 0 ||
      (this.#held?.length ?? 0) > 0 ||
      (this.#blockCheck?.held.length ?? 0) > 0 ||
      (this.#queued?.length ?? 0) > 0 ||
      this.#waiting ||
      this.#choosing
    )
  }

  /** The WAL position after this holder's writes (read-your-writes), once the lease is back. */
  get commitLsn(): Lsn | undefined {
    return this.#commitLsn
  }

  /** Read-your-writes: a statement of the holder's wrote (by its command tag), captured or not. */
  get wroteSoFar(): boolean {
    return this.#wrote || this.#commitLsn !== undefined
  }

  /**
   * The request's replica reads go on this lease now (request-lease.ts #addReplica): it wrote, and
   * a read sent now runs at once on its connection. Not while a `begin()` block is open (only the
   * block's handle may send), on a pipelined route (a shared session), or while a statement of
   * its runs (a cursor being read: the read would wait behind it).
   */
  get takesReadsAfterWrite(): boolean {
    return this.wroteSoFar && !this.pipelined && !this.#block && !this.#busy
  }

  /**
   * Read-your-writes for a streamed reply, whose headers go out before the lease comes back: the
   * WAL position after what the holder wrote so far (outside a transaction, committed), or
   * undefined when it wrote nothing. Not while a statement of the lease still runs (the stream
   * may be reading it, and the position would have to wait for it): then undefined too.
   */
  positionSoFar(): Promise<Lsn | undefined> | undefined {
    if (!this.#wrote || this.#busy || this.#conn === undefined || this.#mode !== undefined) return undefined
    if (this.inTransaction || this.#block) return undefined
    // Nothing runs: this position covers every write so far. The lease captures again when it
    // comes back only if a later statement writes (the token is on the reply already).
    this.#wrote = false
    return this.#position().then(
      (rows) => {
        this.#commitLsn = lsnOf(rows)
        return this.#commitLsn
      },
      () => undefined,
    )
  }

  /**
   * A query of this lease (postgres.js runs it when awaited). `handler`: what runs it, when
   * something has to come first (reading a file's text); it ends in `dispatch`.
   */
  query(
    strings: readonly string[],
    args: unknown[],
    options?: object,
    setup = false,
    handler: (query: AdapterQuery) => void = dispatchQuery,
  ): TrackedQuery {
    return new this.#ctx.Query(strings, args, handler, cancelQuery, options, this, setup)
  }

  /** Called by postgres.js (through dispatchQuery) when a query of this lease runs. */
  dispatch(query: TrackedQuery): void {
    // Once the holder is finished (its response is on its way) nothing new runs on its behalf:
    // only the route transaction's own COMMIT or ROLLBACK, and nothing once the lease is back.
    if (this.#phase === 'done' || (this.#mode !== undefined && !query.final) || (this.#replied && !query.internal)) {
      query.reject(this.#endedError())
      return
    }
    if (this.#setupError !== undefined && !query.setup && !query.internal) {
      query.reject(this.#setupError)
      return
    }
    if (this.#openedShared !== undefined) {
      query.reject(this.#openedShared)
      return
    }
    if (!query.internal) {
      if (this.#endedInSql !== undefined) {
        query.reject(this.#endedInSql)
        return
      }
      // Only the open block's handle: another statement would run inside the block and share its
      // fate (rolled back with it, failing it) while its caller believes it outside; a handle of a
      // block that ended would run outside the block it was given for. The holder's statements
      // while onLease's block is open wait for the hook, as always.
      // Once the block's callback has settled, its COMMIT or ROLLBACK is on its way: a statement
      // of its handle sent now would run after it, outside the block (committed on its own).
      // Likewise once a savepoint's callback has settled: only its RELEASE or ROLLBACK TO is sent.
      const open = this.#blockSettled ? blockSettled : this.#openHandle(query.savepointStep)
      if (query.block !== open && !(query.block === undefined && this.#openBlockSetup && !query.setup)) {
        query.reject(new errors.FST_PG_POOL_OUTSIDE_BLOCK())
        return
      }
      if (this.#blockCheck !== undefined) {
        // Whether a statement of the holder's ended the block is being asked: it waits.
        this.#blockCheck.held.push(query)
        this.#deferredFrom(query)
        return
      }
    }
    if (this.#cancelledEarly?.delete(query)) {
      query.reject(new errors.FST_PG_POOL_ABORTED())
      return
    }
    if (this.#conn !== undefined) {
      this.#deliver(query)
      return
    }
    this.#pending ??= []
    this.#pending.push(query)
    this.#deferredFrom(query)
    if (!this.#waiting && !this.#choosing) this.#acquire()
  }

  #acquire(): void {
    if (!this.#targeted) {
      const target = (this.settings.target as () => LeaseContext | Promise<LeaseContext>)()
      if (!(target instanceof Promise)) {
        this.#ctx = target
        this.#targeted = true
      } else {
        this.#choosing = true
        target.then(
          (ctx) => {
            this.#choosing = false
            this.#ctx = ctx
            this.#targeted = true
            if (this.#mode === 'abort' || this.#phase === 'done') return this.#maybeIdle()
            if ((this.#pending?.length ?? 0) > 0 || this.#readyWaiters !== undefined) this.#acquire()
            else this.#maybeIdle()
          },
          (error: unknown) => {
            this.#choosing = false
            this.#failPending(error)
          },
        )
        return
      }
    }
    const pool = this.#ctx.pool
    const conn = pool.tryAcquire(this)
    if (conn !== undefined) {
      this.#attach(conn)
      return
    }
    try {
      pool.wait(this)
      this.#waiting = true
    } catch (error) {
      this.#failPending(error)
    }
  }

  /** Holder: a connection after waiting. */
  acquired(conn: PoolConnection): void {
    this.#waiting = false
    this.#attach(conn)
  }

  /** Holder: the wait ended without a connection. */
  acquireFailed(error: Error): void {
    this.#waiting = false
    const fallback = this.#ctx.fallback
    const code = (error as { code?: unknown }).code
    if (fallback !== undefined && this.#mode !== 'abort' && (code === CONNECT_FAILED || code === ACQUIRE_TIMEOUT)) {
      // Nothing was sent: the read goes to the primary instead (a replica frozen in the handshake
      // holds its openings past acquireTimeout when that is the shorter).
      this.#ctx = fallback()
      this.#acquire()
      return
    }
    this.#failPending(error)
  }

  #failPending(error: unknown): void {
    const surfaced = withRetryAfter(error, this.#ctx.options.retryAfter)
    for (const query of this.#takePending()) query.reject(surfaced)
    this.#settleReady(surfaced)
    this.#maybeIdle()
  }

  /**
   * Resolves once the lease holds a connection that onLease has prepared, taking one now when it
   * has none; undefined when there is nothing to wait for. A holder's begin() waits here, so that
   * its block starts after the hook's statements and blocks, never among them.
   */
  #whenPrepared(): Promise<void> | undefined {
    // A finished lease runs nothing more: the block's BEGIN is refused as released.
    if (this.settings.onLease === undefined || this.#mode !== undefined) return undefined
    if (this.#setupError !== undefined) return Promise.reject(this.#setupError)
    if (this.#prepared && !this.#preparing) return undefined
    return new Promise<void>((resolve, reject) => {
      this.#readyWaiters ??= []
      this.#readyWaiters.push({ resolve, reject })
      if (this.#conn === undefined && !this.#waiting && !this.#choosing) this.#acquire()
    })
  }

  /** onLease is done (or will never run): the begin() blocks waiting for it go on, or fail. */
  #settleReady(error?: unknown): void {
    const waiters = this.#readyWaiters
    if (waiters === undefined) return
    this.#readyWaiters = undefined
    for (const waiter of waiters) {
      if (error === undefined) waiter.resolve()
      else waiter.reject(error)
    }
  }

  #attach(conn: PoolConnection): void {
    this.#conn = conn
    const label = this.#ctx.leaseApplicationName
    if (label !== undefined && !this.pipelined && !this.#labelAsked) {
      // Once: a rerouted lease sends its statements again, this one among them.
      this.#labelAsked = true
      const name = label(this.settings.request, this.route)
      if (name !== undefined) {
        this.#labelled = true
        // One prepared statement for every lease (the name is a parameter), sent ahead of the
        // holder's first statement, not awaited; the session reset restores the pool's name.
        const query = this.query(SET_APPLICATION_NAME, [name])
        query.internal = true
        query.executed = true
        this.dispatch(query)
        Promise.prototype.then.call(query, undefined, () => {})
      }
    }
    const readOnly = this.#ctx.readOnly === true && !this.#readOnlySet
    if (readOnly) this.#readOnlySet = true
    const begin = this.settings.begin
    if (begin !== undefined && !this.#routeTransaction) {
      this.#routeTransaction = true
      this.#startTransactionMessage('route')
      this.#internal(begin).catch(() => {
        // Statements pipelined behind a failed BEGIN would run outside the transaction: cut the
        // connection so that they fail instead.
        conn.markClosed('error')
        void conn.end('error', 0)
      })
      // A read served by the primary: the transaction is read-only, the session untouched.
      if (readOnly && !this.#readOnlyTransaction) this.#internal('SET TRANSACTION READ ONLY').catch(() => {})
    } else if (readOnly && !this.#ctx.options.pgbouncer) {
      // Ahead of everything else; the session reset undoes it (in every mode: #release).
      this.#sessionReadOnly = true
      this.#internal('SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY').catch(() => {})
    } else if (readOnly) {
      // Behind PgBouncer the session is not ours: the statements run in read-only transactions
      // the lease opens before them (#send) and ends when it finishes.
      this.#implicitReadOnly = true
    }
    const onLease = this.settings.onLease
    if (onLease !== undefined && !this.#preparing && this.#setupError === undefined && !this.#prepared) {
      this.#prepared = true
      this.#preparing = true
      onLease(this).then(
        () => {
          this.#preparing = false
          for (const query of this.#takeHeld()) {
            // onLease may have ended the route transaction in SQL: nothing of the holder's runs then.
            if (this.#endedInSql !== undefined && !query.internal) query.reject(this.#endedInSql)
            else this.#deliver(query)
          }
          this.#settleReady()
          this.#maybeIdle()
        },
        (error: unknown) => {
          // The holder's statements must not run without the context the hook was to set.
          this.#preparing = false
          this.#setupError = error
          for (const query of this.#takeHeld()) query.reject(error)
          this.#settleReady(error)
          this.#maybeIdle()
        },
      )
    }
    for (const query of this.#takePending()) this.#deliver(query)
  }

  #prepared = false
  /**
   * A transaction block was opened on this pipelined holder's shared connection (by it, or by
   * another holder): its statements from now on are refused with this, and its work is not
   * answered as done (notCommitted).
   */
  #openedShared: Error | undefined
  /** The question #probeSharedBlock asked the shared session, while unanswered. */
  #probe: TrackedQuery | undefined
  /** The pool's question whether the holder's SQL left a block open (leftBlockOpen): no statement of its. */
  #leftOpenProbe: TrackedQuery | undefined
  /** The pool's question for a read-your-writes token's WAL position (#position): no statement of its. */
  #positionQuery: TrackedQuery | undefined
  /** Resolves the connection's sharedProbe share of that question, once answered. */
  #probeDone: (() => void) | undefined
  #readOnlySet = false
  /** SET SESSION CHARACTERISTICS ... READ ONLY was sent: the reset must undo it. */
  #sessionReadOnly = false
  /** Behind PgBouncer, a read served by the primary: statements run in BEGIN READ ONLY blocks. */
  #implicitReadOnly = false
  /** Such a block is open. */
  #implicitOpen = false
  #labelAsked = false
  /** This lease's application_name was set: the reset must restore the pool's. */
  #labelled = false

  /**
   * Sends a statement now; holds it while onLease prepares the connection (everything but
   * onLease's own: the holder's statements, its begin() block's BEGIN included), or queues it
   * behind the holder's statement on the server (#oneAtATime).
   */
  #deliver(query: TrackedQuery): void {
    if (!query.internal && this.#copying()) {
      // Behind its own holder's COPY, whose stream is open: refused as postgres.js refuses it in
      // a transaction; queued one at a time behind it, a holder awaiting it before ending its COPY
      // would wait for good.
      query.reject(copyInProgress())
      return
    }
    if (this.#preparing && !query.setup) {
      this.#held ??= []
      this.#held.push(query)
      this.#deferredFrom(query)
    } else if (this.#queued !== undefined || (!query.internal && this.#holderRunning > 0 && this.#oneAtATime)) {
      this.#queued ??= []
      // Sent later from another statement's end: in its caller's async context, where tracers
      // find the active span (as the pool resumes a waiter).
      const resume = channels.queryStart.hasSubscribers ? AsyncLocalStorage.snapshot() : undefined
      this.#queued.push({ query, resume })
    } else this.#send(query)
  }

  /** A COPY of the holder's has its stream open (handed out, neither finished nor destroyed). */
  #copying(): boolean {
    for (const running of this.#inflight) if (streamOpen(running)) return true
    return false
  }

  /**
   * Outside a transaction each statement commits on its own, and a cancel stops only the one
   * running: a statement written behind it would run after a hang-up, or after the request's
   * deadline. So there the holder has one statement on the server at a time (`Promise.all` of
   * several costs a round trip each). In a transaction they travel together: an abort rolls
   * back whatever ran. Pipelined routes share their connection and are never cancelled.
   */
  get #oneAtATime(): boolean {
    return !this.#routeTransaction && !this.#block && !this.#implicitReadOnly && !this.pipelined
  }

  /** Sends what waited behind the holder's statement that ended, up to its next one. */
  #sendQueued(): void {
    const queued = this.#queued
    if (queued === undefined) return
    while (queued.length > 0) {
      const { query, resume } = queued[0] as Queued
      if (!query.internal && this.#holderRunning > 0 && this.#oneAtATime) return
      queued.shift()
      if (resume === undefined) this.#send(query)
      else resume(() => this.#send(query))
    }
    this.#queued = undefined
    // What could not be sent (the connection was lost) was rejected without running.
    this.#maybeIdle()
  }

  #send(query: TrackedQuery): void {
    const conn = this.#conn as PoolConnection
    if (!conn.usable) {
      const lost = new errors.FST_PG_POOL_CONNECTION_LOST(conn.closeReason ?? 'closed')
      query.reject(withRetryAfter(lost, this.#ctx.options.retryAfter))
      return
    }
    if (this.#implicitReadOnly && !query.internal && !this.#block && !this.#implicitOpen) {
      this.#implicitOpen = true
      this.#internal('BEGIN READ ONLY', false, query.setup).catch(() => {
        // The statements behind it must not run outside it.
        conn.markClosed('error')
        void conn.end('error', 0)
      })
    }
    query.redirected = false
    // A message of several statements is answered at its end only (the server flushes its answers
    // then), and the server times out each of its statements on its own (PostgreSQL 13 and
    // later): the client-side deadline allows each statement statementTimeout.
    query.startedAt = this.#ctx.clock.now() + (statementsIn(query) - 1) * this.#ctx.options.statementTimeout
    this.#inflight.add(query)
    if (this.pipelined) this.#ctx.pool.countSharedQuery(1)
    if (!query.internal) {
      this.#ranStatements = true
      this.#holderRunning++
    }
    conn.send(query)
    // The pool's question whether a block is still open (#checkBlock) is no statement of the
    // request's: in a failed block it fails (25P02), which tracing and metrics would count.
    // A statement sent again on another connection (reroute) keeps the message of its first send:
    // one statement, one start and one end for a tracer.
    // The same question asked of a pipelined route's shared session (#probeSharedBlock) neither,
    // nor whether the holder's SQL left a block open (leftBlockOpen), nor the WAL position of a
    // read-your-writes token (#position).
    if (
      channels.queryStart.hasSubscribers &&
      query !== this.#blockCheck?.query &&
      query !== this.#probe &&
      query !== this.#leftOpenProbe &&
      query !== this.#positionQuery &&
      query.observed === undefined
    )
      this.#publishStart(query)
  }

  /** Keeps the caller's async context of a statement that waits before it is sent (#sentFrom). */
  #deferredFrom(query: TrackedQuery): void {
    if (query.internal || !channels.queryStart.hasSubscribers || this.#sentFrom?.has(query)) return
    this.#sentFrom ??= new WeakMap()
    this.#sentFrom.set(query, AsyncLocalStorage.snapshot())
  }

  #publishStart(query: TrackedQuery): void {
    const message: QueryMessage = {
      pool: this.#ctx.view(),
      route: this.route,
      get text() {
        return queryText(query)
      },
      transaction: this.#transactionMessage,
      command: undefined,
      rowCount: undefined,
      error: undefined,
    }
    query.observed = message
    const resume = this.#sentFrom?.get(query)
    if (resume === undefined) channels.queryStart.publish(message)
    else resume(() => channels.queryStart.publish(message))
  }

  /**
   * What the lease knows of a failed statement. Autocommit: the holder's own statement outside a
   * transaction the pool opened (a block of the holder's SQL counts as none: the statement lost may
   * be its COMMIT).
   */
  #failureContext(query: TrackedQuery, conn: PoolConnection | undefined, error?: unknown): FailureContext {
    // Held behind a session reset and never written (server-connection.ts): it did not run.
    const notSent = (error as { notSent?: unknown } | null | undefined)?.notSent === true
    return {
      closeReason: conn?.closeReason,
      aborted: this.#mode === 'abort',
      closing: !this.#ctx.pool.stats().accepting,
      // A replica's statement ran on a hot standby, which commits nothing.
      autocommit:
        !query.internal && !this.#routeTransaction && !this.#block && !notSent && this.#ctx.view().role !== 'replica',
    }
  }

  /** QueryOwner: an error on a COPY stream of this lease's, surfaced like a statement's. */
  streamError(query: TrackedQuery, error: Error): Error {
    if (!isConnectionError(error) && !isPostgresError(error)) return error
    const context = this.#failureContext(query, this.#conn, error)
    // A COPY FROM STDIN whose writer had not ended: its CopyDone was never sent, and the server
    // commits a COPY only there.
    const stream = query.stream
    const unfinished = stream !== undefined && 'writableEnded' in stream && !stream.writableEnded
    return surfaceError(error, unfinished ? { ...context, autocommit: false } : context, this.#ctx.surface) as Error
  }

  /** QueryOwner: a statement of this lease ended; returns the error its caller should see. */
  settled(query: TrackedQuery, value: unknown, error: unknown): unknown {
    if (!this.#inflight.delete(query)) {
      // Rejected before it was sent (released, aborted, setup failed): nothing to account for. But
      // a statement rerouted and never sent again (no connection came) carries the start its first
      // send published: its end is published too.
      if (query.observed !== undefined) this.#publishEnd(query, undefined, error)
      return error
    }
    if (this.#cancelWhenFirst !== undefined) this.#cancelIfFirst(query)
    const unread = error === undefined ? copyOutEnded(query) : undefined
    if (unread !== undefined) {
      this.#unreadCopies ??= new Set()
      this.#unreadCopies.add(unread)
    }
    if (this.pipelined) this.#ctx.pool.countSharedQuery(-1)
    if (query === this.#probe && this.#conn !== undefined) this.#probeAnswered(this.#conn, value, error)
    if (query === this.#blockCheck?.query) this.#blockChecked(value, error)
    if (!query.internal) this.#holderRunning--
    // Sent after postgres.js has handled this answer, as a caller's next statement would be.
    if (this.#queued !== undefined) queueMicrotask(() => this.#sendQueued())
    const conn = this.#conn
    conn?.noteEnded(preparedAnew(query))
    if (leftSocketPaused(query, error)) {
      conn?.markClosed('error')
      resumeFailedCopy(query)
    }
    let out: unknown
    /** On a shared session: what its command tags say of a transaction block. */
    let sharedBlock: 'opened' | 'ask' | undefined
    if (error === undefined) {
      if (!query.internal) {
        const commands = commandsOf(value)
        if (this.pipelined) sharedBlock = sharedBlockOf(commands)
        this.#transaction.noteCommands(commands)
        if ((this.#routeTransaction || this.#block) && !query.savepointStep && conn !== undefined) {
          const ask = this.#noteBlockEnd(commands, mayHoldSeveral(query))
          if (ask !== undefined) this.#checkBlock(conn, query, ask)
        }
        if (!this.#wrote && this.#ctx.captureLsn === true) this.#wrote = wroteIn(value, commands)
        if (mayHoldSeveral(query)) {
          // A simple-protocol message can hold several statements, and postgres.js keeps no tag
          // of one without rows (`begin; insert ...` reads as INSERT): it may have opened a
          // transaction (a shared session is asked: #probeSharedBlock), and written.
          if (!this.pipelined) this.#transaction.noteUnknown()
          if (this.#ctx.captureLsn === true) this.#wrote = true
        }
      }
    } else {
      // A lost connection is the server's or the network's doing (closedByPeer: a route
      // transaction's COMMIT then answers the retryable 503), an unreadable one the pool's.
      if (isConnectionError(error)) lostByPeer(conn, error)
      else if (leftUnreadable(query)) conn?.markClosed('error')
      if (
        (error as { code?: unknown } | null)?.code === READ_ONLY_SQL_TRANSACTION &&
        this.#ctx.writable === true &&
        !this.#readOnlyTransaction &&
        (this.#ctx.options.pgbouncer || conn?.reportsStandby?.() !== false)
      ) {
        // A write refused by a server that is no longer the primary (a failover): this
        // connection is retired, the request gets a 503 it may retry once the new primary serves.
        // Not when the server says it is no standby (`in_hot_standby` off): the 25006 is the
        // holder's own (SET TRANSACTION READ ONLY, a read-only default), answered as itself.
        // Behind PgBouncer no server says so: the `in_hot_standby` there is PgBouncer's copy of
        // its first server login's, never updated (a demoted node's stayed off for good).
        conn?.markClosed('error')
        if (!query.internal && mayHoldSeveral(query)) this.#transaction.noteUnknown()
        const notPrimary = withRetryAfter(
          withCause(new errors.FST_PG_POOL_NOT_PRIMARY(), error),
          this.#ctx.options.retryAfter,
        )
        if (query.observed !== undefined) this.#publishEnd(query, value, notPrimary)
        this.#maybeIdle()
        return notPrimary
      }
      // A simple-protocol message can hold several statements: which ran is unknown.
      if (!query.internal && !this.pipelined && mayHoldSeveral(query)) this.#transaction.noteUnknown()
      // A COMMIT or PREPARE TRANSACTION that fails ends the block too (rolled back): asked.
      if (!query.internal && (this.#routeTransaction || this.#block) && conn !== undefined) {
        this.#checkBlock(conn, query, 'a COMMIT or PREPARE TRANSACTION that failed')
      }
      out = surfaceError(error, this.#failureContext(query, conn, error), this.#ctx.surface)
    }
    if (this.pipelined && !query.internal && this.#openedShared === undefined && conn !== undefined) {
      // A transaction block on a shared session (SQL a pipelined route should not run): known by
      // its command tag, or asked of the server (a message of several statements, a COMMIT or
      // ROLLBACK, which AND CHAIN makes open the next block).
      if (sharedBlock === 'opened') this.#breakShared(conn)
      else if ((sharedBlock === 'ask' || mayHoldSeveral(query)) && conn.usable) this.#probeSharedBlock(conn)
    }
    if (query.observed !== undefined) this.#publishEnd(query, value, out)
    if (this.settings.oneShot && this.#mode === undefined && !this.#busy) void this.finish('commit')
    this.#maybeIdle()
    return out
  }

  /**
   * Whether the holder's statement ended the block the pool opened, by its command tags: COMMIT
   * (END, AND CHAIN) and PREPARE TRANSACTION do; ROLLBACK (ABORT, AND CHAIN) does unless a
   * savepoint of the holder's SQL may be open, since ROLLBACK TO SAVEPOINT has the same tag: then,
   * and after a message of several statements (postgres.js keeps only the last tag of those
   * without rows), returns what to ask the server about (#checkBlock).
   */
  #noteBlockEnd(commands: readonly string[], several: boolean): string | undefined {
    let ask: string | undefined
    for (const command of commands) {
      if (command === 'SAVEPOINT') this.#sqlSavepoints++
      else if (command === 'RELEASE') this.#sqlSavepoints = Math.max(0, this.#sqlSavepoints - 1)
      else if (command === 'COMMIT' || command === 'PREPARE TRANSACTION') {
        this.#endedInSql ??= new errors.FST_PG_POOL_TRANSACTION_ENDED(command)
      } else if (command === 'ROLLBACK') {
        if (this.#sqlSavepoints === 0) {
          this.#endedInSql ??= new errors.FST_PG_POOL_TRANSACTION_ENDED(command)
        } else ask = 'ROLLBACK'
      }
    }
    if (several) {
      this.#sqlSavepoints = Number.POSITIVE_INFINITY
      ask ??= 'a COMMIT or ROLLBACK among several statements'
    }
    return this.#endedInSql === undefined ? ask : undefined
  }

  /**
   * Asks the server whether the pool's block is still open (in a block, or in a failed one, which
   * answers 25P02); sent at once, behind the statement that may have ended it. The holder's
   * statements sent before the answer wait for it (dispatch), so that none runs outside the block.
   */
  #checkBlock(conn: PoolConnection, after: TrackedQuery, what: string): void {
    if (this.#blockCheck !== undefined || this.#endedInSql !== undefined || this.#mode !== undefined || !conn.usable) {
      return
    }
    const query = this.#ownQuery(SHARED_BLOCK_PROBE, after.setup)
    this.#blockCheck = { query, what, block: this.#openBlock, held: [] }
    this.dispatch(query)
    Promise.prototype.then.call(query, undefined, () => {})
    // Not sent (the connection was lost meanwhile): nothing to wait for.
    if (this.#blockCheck?.query === query && !this.#inflight.has(query)) {
      this.#blockChecked(undefined, new Error('not sent'))
    }
  }

  /** The answer of #checkBlock; what waited for it is sent, or refused when the block has ended. */
  #blockChecked(value: unknown, error: unknown): void {
    const check = this.#blockCheck as BlockCheck
    this.#blockCheck = undefined
    const [row] = (error === undefined ? value : []) as RawRow[]
    // Raw (#ownQuery). About a block that has ended since (its callback threw, its ROLLBACK sent
    // behind the question): nothing.
    const current = this.#routeTransaction || (this.#openBlock !== undefined && this.#openBlock === check.block)
    if (current && rawText(row?.[0]) === 'f') {
      this.#endedInSql ??= new errors.FST_PG_POOL_TRANSACTION_ENDED(check.what)
    }
    // The question lost its connection: postgres.js tells us inside its own close, before the
    // connection is marked closed, and a statement sent now would be written on its null socket
    // (an uncaught TypeError, found by the chaos storm). The held statements fail as lost instead.
    if (error !== undefined && isConnectionError(error)) lostByPeer(this.#conn, error)
    for (const query of check.held) this.dispatch(query)
    this.#maybeIdle()
  }

  /** The holder ended the block in SQL: what the pool's COMMIT would commit is no longer one transaction. */
  async #rollBackEndedBlock(setup: boolean): Promise<Error> {
    const ended = this.#endedInSql as Error
    // ROLLBACK: it ends a block AND CHAIN opened (a warning when there is none).
    await this.#internal('ROLLBACK', !setup && this.#mode !== undefined, setup).then(
      () => this.#transaction.noteClosed(),
      () => this.#conn?.markClosed('error'),
    )
    return ended
  }

  #publishEnd(query: TrackedQuery, value: unknown, error: unknown): void {
    const message = query.observed as QueryMessage
    query.observed = undefined
    const { command, count } = resultOf(value)
    message.command = command
    message.rowCount = count
    message.error = error
    channels.queryEnd.publish(message)
  }

  /**
   * QueryOwner: a cursor's callback returned; postgres.js fetches the next batch when this
   * settles. An abort rejects it (postgres.js then ends the cursor with a Sync) while the
   * connection is open; once the connection is closed it never settles, because postgres.js
   * would write to a closed socket: the query fails with the connection instead.
   */
  cursorBatch(_query: TrackedQuery, result: unknown): unknown {
    if (this.#mode !== undefined) {
      // A batch fetched while the holder finished (its stop found no callback waiting: postgres.js
      // was fetching this one): no more is fetched for it, the cursor is closed.
      const stopped = this.#mode === 'abort' ? new errors.FST_PG_POOL_ABORTED() : new errors.FST_PG_POOL_RELEASED()
      return Promise.reject(stopped)
    }
    if (typeof (result as { then?: unknown } | null)?.then !== 'function') return result
    const conn = this.#conn
    return new Promise((resolve, reject) => {
      const stop = (error: unknown) => {
        this.#cursorWaits?.delete(stop)
        if (conn?.usable) reject(error)
      }
      this.#cursorWaits ??= new Set()
      this.#cursorWaits.add(stop)
      ;(result as Promise<unknown>).then(
        (value) => {
          if (!this.#cursorWaits?.delete(stop)) return
          if (conn?.usable) resolve(value)
        },
        (error: unknown) => {
          if (!this.#cursorWaits?.delete(stop)) return
          if (conn?.usable) reject(error)
        },
      )
    })
  }

  /** Called by postgres.js when the holder cancels a query of its own (`query.cancel()`). */
  cancelQuery(held: TrackedQuery): unknown {
    // The holder holds the query it made: after a reroute, the copy sent in its place runs.
    let query = held
    for (let copy = this.#rerouted?.get(query); copy !== undefined; copy = this.#rerouted?.get(query)) query = copy
    for (const queue of [this.#pending, this.#held, this.#queued]) {
      const i = queue?.findIndex((waiting) => waiting === query || (waiting as Queued).query === query) ?? -1
      if (queue !== undefined && i !== -1) {
        queue.splice(i, 1)
        query.reject(new errors.FST_PG_POOL_ABORTED())
        this.#maybeIdle()
        return undefined
      }
    }
    if (!this.#inflight.has(query)) {
      // Not handed to the lease yet: refused when it is.
      if (this.#phase !== 'done') {
        this.#cancelledEarly ??= new Set()
        this.#cancelledEarly.add(query)
      }
      return undefined
    }
    // On a shared connection a cancel request could stop another holder's statement.
    if (this.pipelined) return undefined
    // A cancel request stops whatever the backend runs, and the server runs a connection's
    // statements in order: sent once this one is the first of the holder's still running (as
    // postgres.js does), not onto a statement ahead of it.
    if (this.#inflight.values().next().value === query) {
      this.#cancelSent ??= new WeakSet()
      this.#cancelSent.add(query)
      this.#conn?.cancel()
      return undefined
    }
    this.#cancelWhenFirst ??= new Set()
    this.#cancelWhenFirst.add(query)
    return undefined
  }

  /** A statement ended (`ended`): the one now running is cancelled if its holder asked. */
  #cancelIfFirst(ended: TrackedQuery): void {
    const asked = this.#cancelWhenFirst as Set<TrackedQuery>
    asked.delete(ended)
    const next = this.#inflight.values().next().value
    if (next !== undefined && asked.delete(next)) {
      this.#cancelSent ??= new WeakSet()
      this.#cancelSent.add(next)
      this.#conn?.cancel()
    }
  }

  /**
   * Ends the lease: no new statement runs for the holder; 'abort' also stops what runs.
   * Resolves once the connection is back in the pool. A route transaction commits on 'commit'
   * (rejecting with FST_PG_POOL_COMMIT_FAILED when the server refused, COMMIT_UNKNOWN when no
   * answer came) and rolls back otherwise. Idempotent.
   */
  finish(mode: FinishMode): Promise<void> {
    if (this.#finishing !== undefined) {
      if (mode === 'abort' && this.#mode !== 'abort') {
        this.#mode = 'abort'
        this.#stopWork()
      }
      return this.#finishing
    }
    this.#mode = mode
    this.#phase = 'finishing'
    if (mode === 'abort') this.#stopWork()
    this.#stopHolderDriven()
    this.#finishing = this.#busy
      ? new Promise<void>((resolve) => {
          this.#whenIdle = resolve
        }).then(() => this.#complete())
      : this.#complete()
    const waiting = this.#onEnding
    this.#onEnding = undefined
    for (const fn of waiting ?? []) fn()
    return this.#finishing
  }

  /**
   * Calls `fn` once the lease starts to end, whoever ends it (a handlerTimeout, the pool's close
   * past closeTimeout): at once when it has. Returns how to stop waiting for it.
   */
  onEnding(fn: () => void): () => void {
    if (this.#finishing !== undefined) {
      fn()
      return () => {}
    }
    this.#onEnding ??= []
    const waiting = this.#onEnding
    waiting.push(fn)
    return () => {
      const at = waiting.indexOf(fn)
      if (at >= 0) waiting.splice(at, 1)
    }
  }

  /** Holder: the pool closes past its timeout; resolves once the lease has ended. */
  abort(): Promise<void> {
    return this.finish('abort').catch(() => {})
  }

  /**
   * A transaction block on this pipelined holder's shared session: other holders' statements
   * would run inside it, uncommitted, and be lost with it. Nothing more is sent on the connection,
   * closed once its holders are gone (which rolls the block back); this holder's next statements
   * are refused saying why, and the other holders are told (their work may be in the block).
   */
  #breakShared(conn: PoolConnection): void {
    conn.markClosed('error')
    this.#openedShared = new errors.FST_PG_POOL_PIPELINED(this.route, 'a transaction block (BEGIN in SQL)')
    const lost = new errors.FST_PG_POOL_CONNECTION_LOST('another pipelined request opened a transaction block on it')
    this.#ctx.pool.sharedSessionBroken(conn, this, withRetryAfter(lost, this.#ctx.options.retryAfter))
  }

  /**
   * Asks the shared session whether a message of several statements left a block open: outside a
   * block each statement is its own transaction, which starts with it (equal timestamps); in one,
   * the block started at its BEGIN, a round trip at least before this. In a failed block it errs
   * with 25P02. Sent at once, ahead of any statement sent after the message's answer.
   */
  #probeSharedBlock(conn: PoolConnection): void {
    // No request joins the connection until the answer (#probeAnswered): its statements could
    // run in the block. Allowed once the holder finished, as its COMMIT would be.
    conn.sharingPaused++
    let answered: () => void = () => {}
    const probe = new Promise<void>((resolve) => {
      answered = resolve
    })
    const previous = conn.sharedProbe
    // Every holder's reply waits for it (#probeAnswered resolves it): their statements may be in the block.
    conn.sharedProbe = previous === undefined ? probe : Promise.all([previous, probe]).then(() => {})
    this.#probeDone = answered
    const query = this.#ownQuery(SHARED_BLOCK_PROBE)
    query.final = true
    this.#probe = query
    this.dispatch(query)
    Promise.prototype.then.call(query, undefined, () => {})
    if (this.#probe === query && !this.#inflight.has(query)) {
      // Not sent (the connection was lost meanwhile): nothing to wait for.
      this.#probe = undefined
      conn.sharingPaused--
      if (conn.sharingPaused === 0) conn.sharedProbe = undefined
      answered()
    }
  }

  /**
   * The probe's answer, read in settled(), before anything else can happen to the connection (the
   * lease's release, which may hand it to the next holder, comes after).
   */
  #probeAnswered(conn: PoolConnection, value: unknown, error: unknown): void {
    this.#probe = undefined
    conn.sharingPaused--
    const [row] = (error === undefined ? value : []) as RawRow[]
    // A failure answers nothing (25P02: a failed block; anything else, the session is not known
    // to be clean): taken as a block. Raw (#ownQuery).
    const inBlock = error !== undefined || rawText(row?.[0]) === 't'
    if (inBlock && this.#openedShared === undefined) this.#breakShared(conn)
    else if (conn.sharingPaused === 0 && conn.usable) this.#ctx.pool.sharingResumed(conn)
    if (conn.sharingPaused === 0) conn.sharedProbe = undefined
    this.#probeDone?.()
    this.#probeDone = undefined
  }

  /** Holder: another pipelined holder opened a transaction block on the shared connection. */
  sharedSessionBroken(error: Error): void {
    this.#openedShared ??= error
  }

  /** Holder: held past leakDetectionThreshold. */
  leaked(heldMs: number): void {
    this.#ctx.onLeak(this, heldMs)
  }

  /** Holder: start of the oldest statement still running (the sweep's deadline), or 0. */
  oldestQueryStart(): number {
    for (const query of this.#inflight) return query.startedAt
    return 0
  }

  /**
   * Holder: the connection failed before any of this lease's statements ran on it (its session
   * reset failed, and the server refused what was queued behind it). Everything sent goes again,
   * in order, on another connection.
   */
  reroute(conn: PoolConnection): void {
    if (this.#conn !== conn) return
    this.#conn = undefined
    const again: TrackedQuery[] = []
    for (const query of this.#inflight) {
      // The old connection still rejects the original later: it is ignored from now on.
      query.redirected = true
      if (this.pipelined) this.#ctx.pool.countSharedQuery(-1)
      const cancelled = this.#cancelSent?.has(query) === true || this.#cancelWhenFirst?.delete(query) === true
      if (this.#mode === 'abort' || cancelled) {
        // The request has ended (a hang-up, a handlerTimeout), or the holder cancelled the
        // statement: its cancel request may be what failed the reset. None of it ran, and it is
        // not sent again, on this connection or another.
        const stopped = this.#mode === 'abort' ? this.#endedError() : new errors.FST_PG_POOL_ABORTED()
        if (query.observed !== undefined) this.#publishEnd(query, undefined, stopped)
        query.innerReject(stopped)
        continue
      }
      if (query.cursorFn !== undefined || query.forEachFn !== undefined || query.streaming) {
        // Rows handed out while it runs tie it to the iterator its caller holds: not resent.
        const lost = withRetryAfter(
          new errors.FST_PG_POOL_CONNECTION_LOST('session reset failed'),
          this.#ctx.options.retryAfter,
        )
        // Its start was published: its end is too (the old connection's answer is ignored).
        if (query.observed !== undefined) this.#publishEnd(query, undefined, lost)
        query.innerReject(lost)
        continue
      }
      const copy = this.#resendable(query)
      this.#rerouted ??= new Map()
      this.#rerouted.set(query, copy)
      again.push(copy)
    }
    this.#inflight.clear()
    this.#holderRunning = 0
    this.#pending = [...again, ...this.#takeQueued(), ...this.#takePending()]
    if (this.#pending.length === 0) {
      this.#maybeIdle()
      return
    }
    this.#acquire()
  }

  /** A new query like `query` whose end settles `query`'s promise. */
  #resendable(query: TrackedQuery): TrackedQuery {
    const copy = this.query(query.strings, query.args, query.options, query.setup)
    copy.internal = query.internal
    copy.final = query.final
    const raw = (query as unknown as { isRaw?: unknown }).isRaw
    if (raw !== undefined) (copy as unknown as { isRaw?: unknown }).isRaw = raw
    copy.innerResolve = query.innerResolve
    copy.innerReject = query.innerReject
    // postgres.js runs it when it is dispatched, not when it is awaited: mark it as running.
    copy.executed = true
    copy.observed = query.observed
    query.observed = undefined
    return copy
  }

  /**
   * What only the holder could move on, and nothing else would ever end, is stopped when it
   * finishes, in every mode (nothing runs on behalf of a finished holder): a cursor waiting for
   * its next call, a COPY it had not ended or read to the end (abandonCopy). Without this the
   * lease, and its connection, would wait for the statement deadline.
   */
  #stopHolderDriven(): void {
    if (this.#cursorWaits !== undefined) {
      const released = new errors.FST_PG_POOL_RELEASED()
      for (const stop of [...this.#cursorWaits]) stop(released)
    }
    if (this.#inflight.size === 0) return
    const conn = this.#conn
    let close = false
    for (const query of this.#inflight) {
      // The reason is made only for a COPY stream that is failed with it.
      const ending = abandonCopy(query, () => this.#endedError())
      if (ending === 'close') close = true
      // The connection is retired once the COPY ends with the cancel (leftSocketPaused).
      else if (ending === 'cancel' && !this.pipelined) conn?.cancel()
    }
    if (close && conn !== undefined) {
      conn.markClosed('error')
      void conn.end('error', 0)
    }
  }

  /**
   * What a statement of the holder gets once the lease has ended: FST_PG_POOL_RELEASED after its
   * request finished; after the pool ended it (the client gone, a handlerTimeout, the pool closing
   * past closeTimeout), FST_PG_POOL_ABORTED or _CLOSED with Retry-After, which a client may retry.
   */
  #endedError(): Error {
    if (this.#mode !== 'abort') return new errors.FST_PG_POOL_RELEASED()
    const error = this.#ctx.pool.stats().accepting ? new errors.FST_PG_POOL_ABORTED() : new errors.FST_PG_POOL_CLOSED()
    return withRetryAfter(error, this.#ctx.options.retryAfter)
  }

  #stopWork(): void {
    // A lease still queued for a connection leaves the queue.
    if (this.#waiting && this.#ctx.pool.cancelWait(this)) this.#waiting = false
    // ABORTED, or CLOSED when the pool ended the lease closing past closeTimeout.
    const aborted = this.#endedError()
    for (const query of this.#takePending()) query.reject(aborted)
    for (const query of this.#takeHeld()) query.reject(aborted)
    for (const query of this.#takeQueued()) query.reject(aborted)
    for (const query of this.#blockCheck?.held.splice(0) ?? []) query.reject(aborted)
    this.#settleReady(aborted)
    const conn = this.#conn
    if (conn === undefined || this.#inflight.size === 0) {
      this.#maybeIdle()
      return
    }
    // A shared connection runs other holders' statements too: a cancel request could stop one
    // of theirs. Statements of pipelined routes run to their end.
    if (this.pipelined) return
    if (this.#cursorWaits !== undefined) {
      // Waiting on the handler's callback, not on the server: stopped at once.
      const aborted = new errors.FST_PG_POOL_ABORTED()
      for (const stop of [...this.#cursorWaits]) stop(aborted)
    }
    this.#abortTimer = this.#ctx.clock.setTimeout(() => {
      if (this.#inflight.size === 0) {
        this.#abortTimer = undefined
        return
      }
      conn.cancel()
      this.#abortTimer = this.#ctx.clock.setTimeout(() => {
        this.#abortTimer = undefined
        if (this.#inflight.size === 0) return
        conn.markClosed('error')
        void conn.end('error', 0)
      }, ABORT_GRACE_MS)
    }, CANCEL_DELAY_MS)
  }

  #maybeIdle(): void {
    if (this.#whenIdle !== undefined && !this.#busy) {
      const resolve = this.#whenIdle
      this.#whenIdle = undefined
      resolve()
    }
  }

  #takePending(): TrackedQuery[] {
    const queries = this.#pending ?? []
    this.#pending = undefined
    return queries
  }

  #takeHeld(): TrackedQuery[] {
    const queries = this.#held ?? []
    this.#held = undefined
    return queries
  }

  #takeQueued(): TrackedQuery[] {
    const queued = this.#queued ?? []
    this.#queued = undefined
    return queued.map(({ query }) => query)
  }

  /**
   * Sends a statement of the suite's own (BEGIN, COMMIT, ROLLBACK), tracked like any other.
   * `final`: the route transaction's end, the one statement allowed after the holder finished.
   */
  #internal(text: string, final = false, setup = false): Promise<unknown> {
    const query = this.#ownQuery(text, setup)
    query.final = final
    this.dispatch(query)
    return Promise.prototype.then.call(query, (x: unknown) => x) as Promise<unknown>
  }

  /** The WAL position for a read-your-writes token: a question of the pool's, not traced (#send). */
  #position(final = false): Promise<unknown> {
    const query = this.#ownQuery(CURRENT_LSN_SQL)
    query.final = final
    this.#positionQuery = query
    this.dispatch(query)
    return Promise.prototype.then.call(query, (x: unknown) => x) as Promise<unknown>
  }

  /**
   * A statement of the pool's own, read raw (rows of bytes by position: rawText): the app's
   * parsers (`types`, a bool read as 0/1) and column transforms (`postgres.pascal`) apply to every
   * statement of the connection, and must not change what the pool reads.
   */
  #ownQuery(text: string, setup = false): TrackedQuery {
    const query = this.query([text], [], { simple: true, prepare: false }, setup)
    ;(query as unknown as { raw(): unknown }).raw()
    query.internal = true
    query.executed = true
    return query
  }

  /** Returns the connection: at once when nothing has to run on it first. */
  #complete(): Promise<void> {
    this.#ctx.clock.clearTimeout(this.#abortTimer)
    const conn = this.#conn
    if (conn === undefined) {
      this.#phase = 'done'
      // A route transaction rerouted before its BEGIN ran, that got no connection again: nothing
      // ran, it ended rolled back (its start was published: its end is too).
      if (this.#routeTransaction && this.#routeOutcome === undefined) {
        this.#routeOutcome = 'rollback'
        this.#endTransactionMessage('rollback', undefined)
      }
      return finished
    }
    if (this.#implicitOpen) return this.#endImplicitBlock(conn)
    if (!this.#routeTransaction) {
      // Outside a transaction every write committed on its own, whatever the reply's status.
      if (this.#wrote && this.#mode !== 'abort' && conn.usable) return this.#captureThenRelease(conn)
      this.#release(conn)
      return finished
    }
    return this.#endRouteTransaction(conn)
  }

  /** Ends the read-only block a read behind PgBouncer ran in (nothing to commit), then the release. */
  async #endImplicitBlock(conn: PoolConnection): Promise<void> {
    this.#implicitOpen = false
    if (conn.usable) await this.#internal('ROLLBACK', true).catch(() => conn.markClosed('error'))
    this.#release(conn)
  }

  /** Read-your-writes after writes outside a transaction: the WAL position, then the release. */
  async #captureThenRelease(conn: PoolConnection): Promise<void> {
    try {
      const result = await this.#position(true)
      this.#commitLsn = lsnOf(result)
    } catch {
      // No token: the next read goes by lag alone.
    }
    this.#release(conn)
  }

  #release(conn: PoolConnection): void {
    this.#phase = 'done'
    this.#conn = undefined
    // Behind PgBouncer the server session is not ours: 'never' (which still ends a block the
    // pool opened itself).
    const reset = resetStatement(
      this.#ctx.options.pgbouncer ? 'never' : this.#ctx.options.sessionReset,
      this.#ranStatements,
      this.#transaction.mayBeOpen,
      conn.baseline,
      this.#sessionRestores(),
      this.#block || this.#leftOpen,
    )
    this.#ctx.pool.release(conn, this, reset)
  }

  /** Settings this lease changed on the session itself, which every reset mode must undo. */
  #sessionRestores(): readonly string[] {
    if (!this.#labelled && !this.#sessionReadOnly) return noRestores
    return [
      ...(this.#labelled ? ['application_name'] : []),
      ...(this.#sessionReadOnly ? ['default_transaction_read_only'] : []),
    ]
  }

  async #endRouteTransaction(conn: PoolConnection): Promise<void> {
    let failure: Error | undefined
    let outcome: TransactionOutcome
    if (this.#mode === 'commit' && this.#endedInSql !== undefined) {
      outcome = 'commit_failed'
      failure = conn.usable ? await this.#rollBackEndedBlock(false) : this.#endedInSql
    } else if (this.#mode === 'commit') {
      ;({ outcome, failure } = await this.#commit(conn, true))
    } else {
      outcome = 'rollback'
      if (conn.usable) {
        await this.#internal('ROLLBACK', true).then(
          () => this.#transaction.noteClosed(),
          () => conn.markClosed('error'),
        )
      }
    }
    this.#routeOutcome = outcome
    this.#endTransactionMessage(outcome, failure)
    this.#release(conn)
    if (failure !== undefined) throw withRetryAfter(failure, this.#ctx.options.retryAfter)
  }

  /** COMMIT, and what its answer (or its absence) says about the transaction. */
  async #commit(
    conn: PoolConnection,
    final: boolean,
  ): Promise<{ outcome: TransactionOutcome; failure: Error | undefined }> {
    // Not sent: the server never saw a COMMIT, and a transaction dies with its connection.
    // Closed by the server or the network (its idle_in_transaction_session_timeout, a cut): a 503
    // to retry. Closed by the pool (a statement left it unreadable, a failed reset): the request's own doing.
    if (!conn.usable) {
      return conn.closedByPeer === true
        ? commitConnectionLost(conn.closeReason ?? 'closed')
        : commitLost('the connection was lost')
    }
    // A begin() block whose request already ended: the lease rolls its work back.
    if (!final && this.#mode !== undefined) return commitLost('the request ended first')
    const capture = final && this.#ctx.captureLsn === true && !this.#readOnlyTransaction
    // A block of onLease's commits while the holder's statements are held.
    const setup = !final && this.#onLeaseBlock
    const committing = this.#internal('COMMIT', final, setup)
    if (!capture) return this.#commitOutcome(committing)
    // Read-your-writes: the position is read in a message of its own, written behind the COMMIT
    // (no round trip of its own): in one message with it, a capture that failed (EXECUTE revoked
    // on the function) failed the whole message, and committed work read as not committed. A
    // capture that fails leaves no token: the next read goes by lag alone. Whatever the COMMIT's
    // answer, the connection goes back only once the capture ended too.
    const capturing = this.#position(final).catch(() => undefined)
    const outcome = await this.#commitOutcome(committing)
    const position = await capturing
    if (outcome.outcome === 'commit') this.#commitLsn = lsnOf(position)
    return outcome
  }

  /** What the COMMIT's answer (or its failure) says of the transaction. */
  async #commitOutcome(
    committing: Promise<unknown>,
  ): Promise<{ outcome: TransactionOutcome; failure: Error | undefined }> {
    try {
      const answer = await committing
      this.#transaction.noteClosed()
      if (resultOf(answer).command === 'COMMIT') return { outcome: 'commit', failure: undefined }
      // COMMIT of a transaction a statement had failed: the server rolled back.
      return { outcome: 'commit_failed', failure: new errors.FST_PG_POOL_COMMIT_FAILED('the server rolled back') }
    } catch (error) {
      return commitFailure(error)
    }
  }

  /** The handle whose statements run now: the innermost savepoint's of the open block, or the block's. */
  #openHandle(step = false): object | undefined {
    let handle = this.#openBlock
    let settled = false
    // A savepoint counts when opened on the handle open then (one of a block that ended does not).
    for (const savepoint of this.#savepoints) {
      if (!savepoint.orphaned && savepoint.parent === handle) {
        handle = savepoint.token
        settled = savepoint.settled
      }
    }
    // A settled savepoint's callback: its handle's statements would run after its ROLLBACK TO.
    return settled && !step ? blockSettled : handle
  }

  /**
   * A savepoint() whose work could not be rolled back (its ROLLBACK TO refused or failed): what it
   * did stays in the route transaction or block, so that one ends with a ROLLBACK, not a COMMIT,
   * and the holder's statements in it are refused.
   */
  savepointNotUndone(error: unknown): void {
    // On a lost connection the transaction is gone with it: its own error says so.
    if ((!this.#routeTransaction && !this.#block) || this.#conn?.usable !== true) return
    const code = (error as { code?: unknown } | null)?.code
    this.#endedInSql ??= withCause(
      new errors.FST_PG_POOL_COMMIT_FAILED(`a savepoint() could not be rolled back: ${String(code ?? error)}`),
      error,
    )
  }

  /** Runs a savepoint() callback (`parent`: the handle it was called on); its handle's token is given. */
  async savepoint<T>(
    parent: object | undefined,
    callback: (token: object, settled: () => void) => Promise<T>,
  ): Promise<T> {
    const entry = { token: {}, parent, settled: false, orphaned: false }
    this.#savepoints.push(entry)
    try {
      return await callback(entry.token, () => {
        entry.settled = true
        // Savepoints opened inside it and still running were left behind by its callback: its
        // RELEASE or ROLLBACK TO ends them in SQL, and their statements are refused from now on.
        const inside = new Set<object>([entry.token])
        for (const other of this.#savepoints) {
          if (other.parent !== undefined && inside.has(other.parent)) {
            other.orphaned = true
            inside.add(other.token)
          }
        }
      })
    } finally {
      this.#savepoints.splice(this.#savepoints.indexOf(entry), 1)
    }
  }

  /**
   * A transaction opened with `db.begin()`: BEGIN, the callback, then COMMIT (ROLLBACK when it
   * throws). Its statements are this lease's, so an abort stops them like any other. `setup`:
   * opened by onLease, whose statements run before the holder's; the holder's own block waits
   * for onLease like its other statements.
   */
  async transaction<T>(beginText: string, callback: (token: object) => Promise<T>, setup = false): Promise<T> {
    // onLease runs inside a route transaction; a block of onLease's own may run while the holder's
    // begin() waits for the hook (below), never the other way round.
    if (this.inTransaction || (this.#block && (setup || !this.#onLeaseBlock))) {
      throw new errors.FST_PG_POOL_NESTED_TRANSACTION()
    }
    if (this.pipelined) throw new errors.FST_PG_POOL_PIPELINED(this.route, 'a transaction')
    if (!setup) {
      const prepared = this.#whenPrepared()
      if (prepared !== undefined) await prepared
      // Another block of the holder's began meanwhile.
      if (this.#block) throw new errors.FST_PG_POOL_NESTED_TRANSACTION()
    }
    // A read-only route's block is read-only whatever it asks: in a BEGIN the last mode wins, so
    // `BEGIN READ WRITE READ ONLY` is read-only from its first statement on.
    if (this.settings.readOnly === true) beginText = `${beginText} READ ONLY`
    this.#block = true
    const token = {}
    this.#openBlock = token
    this.#openBlockSetup = setup
    this.#sqlSavepoints = 0
    this.#blockReadOnly = beginsReadOnly(beginText)
    this.#startTransactionMessage('begin')
    let outcome: TransactionOutcome = 'rollback'
    let failure: Error | undefined
    let begun = false
    try {
      if (this.#implicitOpen) {
        // Behind PgBouncer, a read served by the primary ran in a read-only block of the lease's:
        // this block, read-only too, replaces it.
        this.#implicitOpen = false
        await this.#internal('ROLLBACK', false, setup)
      }
      await this.#internal(beginText, false, setup)
      begun = true
      let result: T
      try {
        result = await callback(token)
      } catch (error) {
        this.#blockSettled = true
        await this.#internal('ROLLBACK', false, setup).then(
          () => {
            this.#block = false
            this.#transaction.noteClosed()
          },
          () => {},
        )
        throw error
      }
      this.#blockSettled = true
      if (this.#replied && !setup) {
        // The reply was decided while the callback ran, and the pool asked about this block then
        // (leftBlockOpen): its answer (a 500 when the block wrote) holds only if no COMMIT follows.
        await this.#internal('ROLLBACK', false, setup).then(
          () => {
            this.#block = false
            this.#transaction.noteClosed()
          },
          () => {},
        )
        throw new errors.FST_PG_POOL_RELEASED()
      }
      if (this.#endedInSql !== undefined) {
        outcome = 'commit_failed'
        failure = this.#conn?.usable === true ? await this.#rollBackEndedBlock(setup) : this.#endedInSql
        this.#block = false
        throw failure
      }
      const conn = this.#conn
      // A reply decided while this COMMIT is out waits for it (leftBlockOpen).
      let committing: (failure: Error | undefined) => void = () => {}
      if (!setup) this.#blockCommit = new Promise((resolve) => (committing = resolve))
      const committed = conn === undefined ? commitLost('the connection was lost') : await this.#commit(conn, false)
      outcome = committed.outcome
      failure =
        committed.failure === undefined ? undefined : withRetryAfter(committed.failure, this.#ctx.options.retryAfter)
      committing(failure)
      if (outcome === 'commit' || outcome === 'commit_failed') this.#block = false
      if (failure !== undefined) throw failure
      return result
    } finally {
      this.#blockCommit = undefined
      // A BEGIN that failed opened nothing: the lease is outside a block again. Nor is a block open
      // on a connection that was lost (a ROLLBACK that could not be sent, a COMMIT with no answer):
      // what the holder sends next fails as a lost connection, not as a nested transaction.
      if (!begun || this.#conn?.usable !== true) this.#block = false
      // The block's handle is done with, whatever became of the block (#block tells the reset),
      // and so is what its statements said of its end: the request's statements after it run.
      if (this.#openBlock === token) this.#openBlock = undefined
      this.#openBlockSetup = false
      this.#blockSettled = false
      this.#endedInSql = undefined
      this.#endTransactionMessage(outcome, failure)
    }
  }

  #startTransactionMessage(kind: 'route' | 'begin'): void {
    if (!channels.transactionStart.hasSubscribers) return
    this.#transactionMessage = { pool: this.#ctx.view(), route: this.route, kind, outcome: undefined, error: undefined }
    channels.transactionStart.publish(this.#transactionMessage)
  }

  #endTransactionMessage(outcome: TransactionOutcome, error: Error | undefined): void {
    this.#ctx.pool.transactionEnded(outcome)
    const message = this.#transactionMessage
    if (message === undefined) return
    this.#transactionMessage = undefined
    message.outcome = outcome
    message.error = error
    channels.transactionEnd.publish(message)
  }

  /** Takes a connection now (app.db.lease()): resolves once the lease holds one. */
  async hold(): Promise<void> {
    if (this.#conn !== undefined) return
    await this.#internal('SELECT 1').then(() => {})
  }
}

/** The question whether the pool's block is still open (Lease.#checkBlock), while it is out. */
interface BlockCheck {
  readonly query: TrackedQuery
  /** What may have ended the block, for the error's message. */
  readonly what: string
  /** The begin() block asked about (undefined: the route transaction): an answer after it ended tells nothing. */
  readonly block: object | undefined
  /** The request's statements sent meanwhile, sent (or refused) with the answer. */
  readonly held: TrackedQuery[]
}

/** A tagged template's strings: postgres.js prepares it once per connection. */
const SET_APPLICATION_NAME: readonly string[] = Object.freeze(
  Object.assign(["select pg_catalog.set_config('application_name', ", ', false)'], {
    raw: ["select pg_catalog.set_config('application_name', ", ', false)'],
  }),
)

const noRestores: readonly string[] = Object.freeze([])

/** What no handle's statements carry: the open block's callback has settled (#blockSettled). */
const blockSettled: object = Object.freeze({})

/** A BEGIN whose last access mode is READ ONLY (in a BEGIN the last mode wins). */
function beginsReadOnly(text: string | undefined): boolean {
  if (text === undefined) return false
  const modes = text.toUpperCase().match(/\bREAD\s+(ONLY|WRITE)\b/g)
  return modes !== null && /ONLY$/.test(modes[modes.length - 1] as string)
}

/** Command tags that leave a transaction block open, or are only answered inside one. */
const OPENS_BLOCK = new Set(['BEGIN', 'START TRANSACTION', 'SAVEPOINT', 'RELEASE'])
/** Command tags that end a block, or open the next one (AND CHAIN): the session is asked. */
const MAY_CHAIN = new Set(['COMMIT', 'ROLLBACK'])

/** What a shared session's command tags say of a transaction block. */
function sharedBlockOf(commands: readonly string[]): 'opened' | 'ask' | undefined {
  let ask = false
  for (const command of commands) {
    if (OPENS_BLOCK.has(command)) return 'opened'
    if (MAY_CHAIN.has(command)) ask = true
  }
  return ask ? 'ask' : undefined
}

/**
 * A statement failed as a lost connection: the server or the network closed it, which the socket's
 * close may tell the pool only after this (closedByPeer); the connection is closed either way. Not
 * its peer's doing: a protocol violation (08P01: it answers what this client sent), and a client
 * the pool destroyed or ended itself (CONNECTION_DESTROYED, CONNECTION_ENDED: a statement that left
 * it unreadable, a statement postgres.js could not build queued beside others).
 */
function lostByPeer(conn: PoolConnection | undefined, error: unknown): void {
  const code = (error as { code?: unknown }).code
  const ours = code === '08P01' || code === 'CONNECTION_DESTROYED' || code === 'CONNECTION_ENDED'
  if (conn?.noteSocketClosed !== undefined && !ours) conn.noteSocketClosed()
  else conn?.markClosed('error')
}

/**
 * Whether the session is inside a transaction block, and whether that block wrote (it has a
 * transaction id: row writes and row locks take one) (leftBlockOpen).
 */
const LEFT_OPEN_PROBE =
  'SELECT pg_catalog.statement_timestamp() OPERATOR(pg_catalog.<>) pg_catalog.transaction_timestamp() AS in_block, ' +
  'pg_catalog.txid_current_if_assigned() IS NOT NULL AS wrote'
/** Whether the session is inside a transaction block (#probeSharedBlock). */
const SHARED_BLOCK_PROBE =
  'SELECT pg_catalog.statement_timestamp() OPERATOR(pg_catalog.<>) pg_catalog.transaction_timestamp() AS in_block'
/**
 * A COPY's stream still open: a writer not finished, a reader not read to its end (postgres.js
 * drops its own before the query ends at ReadyForQuery, and queues what comes next).
 */
function streamOpen(query: TrackedQuery): boolean {
  const stream = query.stream
  if (stream === undefined || query.ended || stream.destroyed) return false
  return 'writableFinished' in stream ? !stream.writableFinished : !(stream as Readable).readableEnded
}

/** What postgres.js answers a statement sent while a COPY runs on its connection. */
function copyInProgress(): Error {
  return Object.assign(new Error('You cannot execute queries during copy'), { code: 'COPY_IN_PROGRESS' })
}

/** SQLSTATE read_only_sql_transaction. */
const READ_ONLY_SQL_TRANSACTION = '25006'
const CONNECT_FAILED = 'FST_PG_POOL_CONNECT_FAILED'
const ACQUIRE_TIMEOUT = 'FST_PG_POOL_ACQUIRE_TIMEOUT'

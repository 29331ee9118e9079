import { AsyncLocalStorage } from 'node:async_hooks'
import { EventEmitter } from 'node:events'
import type { Clock, TimerHandle } from './clock.js'
import type { ConnectionFactory } from './connection-factory.js'
import { Connector } from './connector.js'
import { type AcquireMessage, channels, type TransactionOutcome } from './diagnostics.js'
import { errors } from './errors.js'
import { Housekeeping } from './housekeeping.js'
import type { ResolvedPoolOptions } from './options.js'
import type { FallbackReason } from './replica-router.js'
import type { CloseReason, PoolConnection } from './server-connection.js'
import { owedReset } from './session-reset.js'
import { SharedConnections } from './shared-connections.js'
import type { PgPoolView } from './types.js'
import { WaitQueue } from './wait-queue.js'

/** What the pool needs of whoever holds a connection (a lease). */
export interface Holder {
  readonly route: string
  /** Shares a connection with other pipelined holders instead of holding one alone. */
  readonly pipelined: boolean
  /** Start of the oldest statement still running, or 0 (the sweep's deadline). */
  oldestQueryStart(): number
  /** Got a connection after waiting. */
  acquired(conn: PoolConnection): void
  /** Its wait ended without one. */
  acquireFailed(error: Error): void
  /** Its connection failed before any of its statements ran (a failed session reset): find another. */
  reroute(conn: PoolConnection): void
  /** Held past leakDetectionThreshold. */
  leaked(heldMs: number): void
  /** The pool closes past its timeout: stop everything now; resolves once it has ended, if it can tell. */
  abort(): Promise<void> | void
  /**
   * Pipelined: another holder of its shared connection opened a transaction block there, inside
   * which this one's statements may have run: its work is not to be answered as done.
   */
  sharedSessionBroken(error: Error): void
  /** When it joined the queue (pool clock), while it waits. */
  waitSince: number
  /** The diagnostics message of its wait, while a subscriber listens. */
  waitMessage: AcquireMessage | undefined
  /**
   * Runs a function in the holder's own async context (taken when it was made or began to wait,
   * while a tracer listens or it calls back): the pool hands it a connection, moves it after a
   * failed reset, or fails its wait inside another's context (whoever released the connection, a
   * timer, a connection's socket), and its statements and callbacks must run in its own.
   */
  resume: ((fn: () => void) => void) | undefined
}

export interface PoolStats {
  /** Configured maximum of server connections. */
  readonly max: number
  /** Connections open or being opened. */
  readonly open: number
  /** Connections being opened. */
  readonly connecting: number
  /** Open connections nobody holds. */
  readonly idle: number
  /**
   * Connections held by a request or a job (alone, or shared by pipelined requests), and those
   * back from one whose cancel request is still on its way (no one may take them yet).
   */
  readonly leased: number
  /** Of those, connections shared by pipelined requests. */
  readonly shared: number
  /** Pipelined requests holding a share of a connection. */
  readonly pipelined: number
  /**
   * Statements of pipelined requests sent and not answered yet: beyond one per shared
   * connection, they queue on it.
   */
  readonly sharedQueries: number
  /** Acquires waiting in the queue. */
  readonly waiting: number
  /** The configured queue cap (`pool.maxWaiting`). */
  readonly maxWaiting: number
  /**
   * Waiters allowed now: `maxWaiting`, or while fewer than `max` connections are leased, as many
   * as the pool can still open connections for. Past it, acquires are refused at once.
   */
  readonly waitingCap: number
  /** How long the oldest waiter has waited, ms (0 when nobody waits). */
  readonly oldestWaitMs: number
  /** False once the pool started closing. */
  readonly accepting: boolean
}

export type AcquireFailure = 'timeout' | 'rejected' | 'aborted' | 'error'

/** Events of the read-only view; payloads are plain values. */
export interface PoolEvents {
  /** A lease was handed out after waiting `waitMs`. */
  acquire: [waitMs: number]
  /** An acquire failed. */
  acquireError: [reason: AcquireFailure, waitMs: number]
  /** A lease came back after `heldMs`; `route` is the route template (or 'app.db'). */
  release: [heldMs: number, route: string]
  /** A connection opened in `ms`. */
  connect: [ms: number]
  /** Opening a connection failed (message already redacted). */
  connectError: [error: Error]
  /** A connection closed. */
  close: [reason: CloseReason]
  /** A lease was held past `leakDetectionThreshold`. */
  leak: [heldMs: number]
  /** A transaction the suite ran ended (route transactions, `begin()`, `app.db.transaction()`). */
  transaction: [outcome: TransactionOutcome]
  /** A session reset failed: its connection was retired (the error says why; no parameters in it). */
  resetError: [error: Error]
  /** A read meant for a replica went to this primary: no replica usable, all lagging, or behind the client's write. */
  readFallback: [reason: FallbackReason]
}

export interface PoolDeps {
  readonly options: ResolvedPoolOptions
  readonly clock: Clock
  readonly factory: ConnectionFactory
  /** Turns an opening failure into the coded error callers see (and redacts it). */
  readonly connectError: (error: unknown) => Error
  /** The view that diagnostics messages name. */
  readonly view?: (() => PgPoolView) | undefined
}

/** After the pool's close timeout, how long cancelled leases get to come back before connections are cut. */
const CANCEL_GRACE_MS = 1_000
/** Behind PgBouncer, how long a statement cancelled at its deadline has to answer before its connection is cut, s. */
const DEADLINE_END_GRACE_S = 1

/**
 * A bounded pool of connections with its own FIFO wait queue. Counts are exact because the
 * pool, not postgres.js, decides which connection each caller gets. Connections are handed to
 * holders; a holder gives its connection back with the session reset it owes.
 */
export class Pool extends EventEmitter<PoolEvents> {
  readonly options: ResolvedPoolOptions
  readonly #clock: Clock
  readonly #deps: PoolDeps
  /** Every open connection. */
  readonly #all = new Set<PoolConnection>()
  readonly #idle: PoolConnection[] = []
  /** Connections held alone, and by whom. */
  readonly #leased = new Map<PoolConnection, Holder>()
  readonly #shared: SharedConnections<Holder>
  /** Resets owed by connections pipelined holders used, paid when a holder of its own takes one. */
  readonly #owed = new Map<PoolConnection, string>()
  /**
   * Holders a failed reset moved off their connection (#resetFailed): the connection they get next
   * is the same lease's, not another acquire (acquires and releases pair up).
   */
  readonly #moved = new WeakSet<Holder>()
  /** Connections back from their holder, held until that holder's cancel request has ended. */
  readonly #awaitingCancel = new Map<PoolConnection, TimerHandle>()
  readonly #waiters = new WaitQueue<Holder>()
  readonly #connector: Connector
  readonly #housekeeping: Housekeeping<Holder>
  #queueTimer: TimerHandle | undefined
  /** Statements of pipelined holders in flight (their leases report them). */
  #sharedQueries = 0
  #closing = false
  #ended: Promise<void> | undefined
  #drained: (() => void) | undefined

  constructor(deps: PoolDeps) {
    super()
    this.options = deps.options
    this.#clock = deps.clock
    this.#deps = deps
    // A shared connection that is to retire takes no new holder: it retires when its last leaves
    // (one always in use would outlive maxLifetime and maxPreparedStatements otherwise).
    this.#shared = new SharedConnections(deps.options.pipelineDepth, (conn) => !this.#retiring(conn))
    this.#connector = new Connector(deps.factory, deps.clock, {
      opened: (conn, ms) => this.#opened(conn, ms),
      failed: (error) => this.#openFailed(error),
      retry: () => this.#grow(),
    })
    this.#housekeeping = new Housekeeping<Holder>(deps.clock, deps.options, {
      idle: () => this.#idle,
      held: () => this.#held(),
      retire: (conn, reason) => this.#discard(conn, reason),
      leaked: (holder, heldMs) => {
        this.emit('leak', heldMs)
        holder.leaked(heldMs)
      },
      pastDeadline: (conn) => {
        // Told once (the sweep sees it late again while its cancel is on its way).
        if (conn.closeReason === 'deadline') return
        // Cutting the socket alone leaves the server running the statement (a backend waiting on
        // a lock never reads it; behind PgBouncer only PgBouncer's socket is cut): a write given
        // up with a retryable 503 would commit later. Cancelled first; the pool sends nothing
        // more on the connection (closed below), so the cancel can land on no other statement.
        conn.cancel()
        conn.markClosed('deadline')
        if (!this.options.pgbouncer || !conn.cancelPending) {
          // The backend is this socket's alone: the cancel reaches it whenever it arrives.
          void conn.end('deadline', 0)
          return
        }
        // PgBouncer forwards a cancel to the server connection its client is linked to now: the
        // client is ended once the cancel was delivered, its statement's answer (57014, or what
        // it did before the cancel landed) read within DEADLINE_END_GRACE_S.
        void conn.cancelSettled().then(() => conn.end('deadline', DEADLINE_END_GRACE_S))
      },
    })
    this.#housekeeping.start()
  }

  stats(): PoolStats {
    const head = this.#waiters.peek()
    return {
      max: this.options.max,
      open: this.#all.size + this.#connector.opening,
      connecting: this.#connector.opening,
      idle: this.#idle.length,
      // A connection waiting for its last holder's cancel request is no one's, and no one's to take.
      leased: this.#leased.size + this.#shared.size + this.#awaitingCancel.size,
      shared: this.#shared.size,
      pipelined: this.#shared.holders,
      sharedQueries: this.#sharedQueries,
      waiting: this.#waiters.length,
      maxWaiting: this.options.maxWaiting,
      waitingCap: this.#queueCap(),
      oldestWaitMs: head ? this.#clock.now() - head.waitSince : 0,
      accepting: !this.#closing,
    }
  }

  /**
   * Whether an acquire that finds no connection free would be refused now (the queue at its
   * cap). The rule admission control reads instead of deriving its own.
   */
  wouldRefuse(pipelined = false): boolean {
    if (this.#closing) return true
    if (this.#waiters.length < this.#queueCap()) return false
    // A pipelined request that finds nobody waiting may still join a shared connection.
    return !(pipelined && this.#waiters.length === 0 && this.#shared.leastBusy() !== undefined)
  }

  /** A statement of a pipelined holder was sent (+1) or answered (-1). */
  countSharedQuery(delta: 1 | -1): void {
    this.#sharedQueries += delta
  }

  /** Emitted by leases when a transaction of theirs ends. */
  transactionEnded(outcome: TransactionOutcome): void {
    this.emit('transaction', outcome)
  }

  /** A read the router could not give a replica is served here (counted by observers). */
  readFallback(reason: FallbackReason): void {
    this.emit('readFallback', reason)
  }

  /** A connection now, or undefined when none is free (nobody may be waiting ahead). */
  tryAcquire(holder: Holder): PoolConnection | undefined {
    if (this.#closing || this.#waiters.length > 0) return undefined
    let conn = this.#popIdle()
    // A pipelined holder takes an idle connection first, and only when there is none joins
    // the least busy shared one (while more connections open, up to max).
    if (conn === undefined && holder.pipelined) {
      conn = this.#shared.leastBusy()
      if (conn !== undefined && this.#connector.opening === 0) this.#grow(1)
    }
    if (conn === undefined) return undefined
    this.#lease(conn, holder)
    if (!this.#moved.delete(holder)) this.emit('acquire', 0)
    return conn
  }

  /**
   * Queues `holder` for the next free connection (`holder.acquired` or `holder.acquireFailed`);
   * throws the coded refusal when it may not wait.
   */
  wait(holder: Holder): void {
    if (this.#closing) throw this.#refuseWait(holder, new errors.FST_PG_POOL_CLOSED())
    if (this.#waiters.length >= this.#queueCap()) {
      throw this.#refuseWait(holder, new errors.FST_PG_POOL_QUEUE_FULL(this.options.maxWaiting))
    }
    holder.waitSince = this.#clock.now()
    const view = this.#deps.view
    // A lease keeps its own (lease.ts); a holder made before a tracer listened takes it now.
    if (holder.resume === undefined && (channels.queryStart.hasSubscribers || channels.acquireEnd.hasSubscribers)) {
      holder.resume = AsyncLocalStorage.snapshot()
    }
    if (channels.acquireStart.hasSubscribers && view !== undefined) {
      holder.waitMessage = {
        pool: view(),
        route: holder.route,
        queued: this.#waiters.length,
        waitMs: 0,
        error: undefined,
      }
      channels.acquireStart.publish(holder.waitMessage)
    }
    this.#waiters.push(holder)
    this.#armQueueTimer()
    this.#grow()
  }

  /**
   * A holder of shared `conn` opened a transaction block on it: every other holder of it is told
   * (their statements may have run inside the block, which closing the connection rolls back).
   */
  sharedSessionBroken(conn: PoolConnection, by: Holder, error: Error): void {
    for (const holder of this.#shared.holdersOf(conn)) if (holder !== by) holder.sharedSessionBroken(error)
  }

  /** Pipelined requests may join `conn` again (sharingPaused is back to 0): those waiting do. */
  sharingResumed(conn: PoolConnection): void {
    this.#fillShares(conn)
  }

  /** Takes `holder` out of the queue (its request ended); true if it was waiting. */
  cancelWait(holder: Holder): boolean {
    if (!this.#waiters.remove(holder)) return false
    const waited = this.#clock.now() - holder.waitSince
    this.emit('acquireError', 'aborted', waited)
    this.#endWait(holder, waited, new errors.FST_PG_POOL_ABORTED())
    this.#fillAnyShares()
    return true
  }

  /**
   * Takes a connection back from `holder`, which guarantees nothing of its still runs on it.
   * `reset`: the statement to queue before anyone else uses it. A connection that saw a
   * connection-level error or outlived its lifetime is closed instead; one with a cancel request
   * on its way waits for it to end.
   */
  release(conn: PoolConnection, holder: Holder, reset: string | undefined): void {
    const now = this.#clock.now()
    if (holder.pipelined) {
      const since = this.#shared.leave(conn, holder, reset)
      if (since === undefined) return
      this.emit('release', now - since, holder.route)
      if (this.#shared.sharersOf(conn) > 0) {
        this.#fillShares(conn)
        return
      }
      this.#putBack(conn, this.#shared.takeReset(conn), true)
      return
    }
    if (this.#leased.get(conn) !== holder) return
    this.#leased.delete(conn)
    this.emit('release', now - conn.leasedAt, holder.route)
    this.#putBack(conn, reset)
  }

  /** Opens one connection into the pool: proves the database is reachable. */
  async warmUp(): Promise<void> {
    const started = this.#clock.now()
    let conn: PoolConnection
    try {
      conn = await this.#deps.factory(new AbortController().signal)
    } catch (error) {
      const coded = this.#deps.connectError(error)
      this.emit('connectError', coded)
      throw coded
    }
    this.#opened(conn, this.#clock.now() - started)
  }

  /**
   * Stops handing out connections, fails every waiter, waits up to `timeoutMs` for leases to
   * come back, then ends every connection (cutting any that still run a statement).
   */
  end(timeoutMs = this.options.closeTimeout): Promise<void> {
    this.#ended ??= this.#end(timeoutMs)
    return this.#ended
  }

  async #end(timeoutMs: number): Promise<void> {
    this.#closing = true
    this.#housekeeping.stop()
    this.#connector.stop()
    this.#clock.clearTimeout(this.#queueTimer)
    for (const waiter of this.#waiters.drain()) {
      const waited = this.#clock.now() - waiter.waitSince
      this.emit('acquireError', 'rejected', waited)
      this.#endWait(waiter, waited, new errors.FST_PG_POOL_CLOSED())
    }
    for (const conn of this.#idle.splice(0)) this.#discard(conn, 'shutdown')
    await this.#drain(timeoutMs)
    const aborted: (Promise<void> | void)[] = []
    if (this.#heldCount > 0) {
      // Cutting the socket alone would leave the server running the statement (it notices a
      // gone client only when it writes): cancel first, then cut what is still there.
      for (const holder of this.#leased.values()) aborted.push(holder.abort())
      for (const [conn, holders] of this.#shared.entries()) {
        for (const holder of holders.keys()) aborted.push(holder.abort())
        // A lease never cancels on a shared connection (the statement may be another holder's):
        // here every holder of it is being ended, so the pool cancels what runs there.
        conn.cancel()
      }
      await this.#drain(CANCEL_GRACE_MS)
    }
    await Promise.all([...this.#all].map((conn) => this.#discard(conn, 'shutdown', 0)))
    // A holder cut with its connection ends now (what it still ran there fails at once): its
    // last statement's end, its transaction's and its release are published before the pool
    // says it ended, and observers stop listening after that (PgPoolRegistry.onClosed).
    if (aborted.length > 0)
      await this.#within(
        Promise.all(aborted).then(() => {}),
        CANCEL_GRACE_MS,
      )
  }

  /** `work`, or `timeoutMs` on the pool's clock, whichever ends first. */
  async #within(work: Promise<void>, timeoutMs: number): Promise<void> {
    let timer: TimerHandle | undefined
    await Promise.race([
      work,
      new Promise<void>((resolve) => {
        timer = this.#clock.setTimeout(resolve, timeoutMs)
      }),
    ])
    this.#clock.clearTimeout(timer)
  }

  get #heldCount(): number {
    return this.#leased.size + this.#shared.size
  }

  async #drain(timeoutMs: number): Promise<void> {
    if (this.#heldCount === 0 || timeoutMs <= 0) return
    await this.#within(
      new Promise<void>((resolve) => {
        this.#drained = resolve
      }),
      timeoutMs,
    )
  }

  /**
   * Waiters allowed now: `maxWaiting`, or more while fewer connections are leased than `max`.
   * A request waiting for a connection the pool opens for it waits for no other request: with
   * `maxWaiting: 0` (no queue) or a cold pool, refusing it would refuse a pool with room.
   */
  #queueCap(): number {
    return Math.max(this.options.maxWaiting, this.options.max - this.#heldCount - this.#awaitingCancel.size)
  }

  #popIdle(): PoolConnection | undefined {
    let conn = this.#idle.pop()
    // A connection the server closed while it sat idle (terminated, restarted) is replaced,
    // never handed out: the sweep would only find it later.
    while (conn !== undefined && !conn.usable) {
      this.#discard(conn, conn.closeReason ?? 'error')
      conn = this.#idle.pop()
    }
    return conn
  }

  #lease(conn: PoolConnection, holder: Holder): void {
    const now = this.#clock.now()
    if (holder.pipelined) {
      this.#shared.join(conn, holder, now)
      return
    }
    const owed = this.#owed.get(conn)
    if (owed !== undefined) {
      // Ahead of the holder's first statement, as any reset (a failure reroutes the holder).
      this.#owed.delete(conn)
      conn.queueReset(owed, (error) => this.#resetFailed(conn, error))
    }
    conn.leasedAt = now
    this.#leased.set(conn, holder)
  }

  #refuse(error: Error, reason: AcquireFailure): Error {
    this.emit('acquireError', reason, 0)
    return error
  }

  /** A wait refused at once: published as a wait that ended as it began (a span, for a tracer). */
  #refuseWait(holder: Holder, error: Error): Error {
    const view = this.#deps.view
    if (channels.acquireStart.hasSubscribers && view !== undefined) {
      const message: AcquireMessage = {
        pool: view(),
        route: holder.route,
        queued: this.#waiters.length,
        waitMs: 0,
        error: undefined,
      }
      channels.acquireStart.publish(message)
      message.error = error
      channels.acquireEnd.publish(message)
    }
    return this.#refuse(error, 'rejected')
  }

  #endWait(holder: Holder, waited: number, error: Error | undefined): void {
    const message = holder.waitMessage
    if (message !== undefined) {
      holder.waitMessage = undefined
      message.waitMs = waited
      message.error = error
      channels.acquireEnd.publish(message)
    }
    // In the holder's own context (a timer's or a failed opening's is active): it may fall back
    // to another pool and take a connection there at once.
    if (error !== undefined) inContextOf(holder, () => holder.acquireFailed(error))
  }

  /** One timer for the whole queue: waiters time out in the order they came (one timeout for all). */
  #armQueueTimer(): void {
    const head = this.#waiters.peek()
    if (this.#queueTimer !== undefined || head === undefined) return
    const due = head.waitSince + this.options.acquireTimeout - this.#clock.now()
    this.#queueTimer = this.#clock.setTimeout(this.#expire, Math.max(0, due))
  }

  readonly #expire = (): void => {
    this.#queueTimer = undefined
    const now = this.#clock.now()
    const timeout = this.options.acquireTimeout
    for (let head = this.#waiters.peek(); head !== undefined; head = this.#waiters.peek()) {
      if (now - head.waitSince < timeout) break
      this.#waiters.shift()
      this.emit('acquireError', 'timeout', now - head.waitSince)
      this.#endWait(head, now - head.waitSince, new errors.FST_PG_POOL_ACQUIRE_TIMEOUT(timeout))
    }
    this.#fillAnyShares()
    this.#armQueueTimer()
  }

  /**
   * `fromShared`: pipelined holders used it. They share a session by contract (several run on it
   * at once), so no reset is owed between them: the reset is owed until a holder of its own
   * (a request's lease, app.db) takes the connection, and queued then (#lease).
   */
  #putBack(conn: PoolConnection, reset: string | undefined, fromShared = false): void {
    // Behind PgBouncer no reset reaches what it replays on this client connection (TimeZone,
    // DateStyle, client_encoding...): a connection a holder changed one on is retired (no error).
    if (this.options.pgbouncer && conn.reportedChanged?.() === true) conn.markClosed('parameters')
    if (!conn.usable || this.#closing || this.#clock.now() >= conn.expiresAt) {
      this.#discard(conn, conn.closeReason ?? (this.#closing ? 'shutdown' : 'lifetime'))
      return
    }
    if (conn.cancelPending) {
      this.#afterCancel(conn, reset, fromShared)
      return
    }
    if (this.#tooManyStatements(conn)) {
      this.#discard(conn, 'statements')
      return
    }
    if (reset !== undefined && fromShared) this.#owe(conn, reset)
    else if (reset !== undefined) conn.queueReset(reset, (error) => this.#resetFailed(conn, error))
    this.#handOff(conn)
  }

  /**
   * A cancel request of its last holder is still on its way (server-connection.ts,
   * cancelPending): nobody gets the connection before the request has ended, when it can land on
   * no other statement. One whose request does not end within connectTimeout is closed.
   */
  #afterCancel(conn: PoolConnection, reset: string | undefined, fromShared: boolean): void {
    const timer = this.#clock.setTimeout(() => {
      if (this.#awaitingCancel.delete(conn)) this.#discard(conn, 'error')
    }, this.options.connectTimeout)
    // Cleared by #discard too (end() closes a connection still waiting: nothing stays armed).
    this.#awaitingCancel.set(conn, timer)
    void conn.cancelSettled().then(() => {
      this.#clock.clearTimeout(timer)
      if (this.#awaitingCancel.delete(conn)) this.#putBack(conn, reset, fromShared)
    })
  }

  /** Past its lifetime, or holding maxPreparedStatements: closed when it comes back. */
  #retiring(conn: PoolConnection): boolean {
    return this.#clock.now() >= conn.expiresAt || this.#tooManyStatements(conn)
  }

  #tooManyStatements(conn: PoolConnection): boolean {
    const { maxPreparedStatements } = this.options
    return maxPreparedStatements > 0 && conn.prepared >= maxPreparedStatements
  }

  #owe(conn: PoolConnection, reset: string): void {
    this.#owed.set(conn, owedReset(this.#owed.get(conn), reset))
  }

  /**
   * A reset failed (called while postgres.js reads its answer): whoever got the connection
   * since is sent elsewhere now, before the refusals of its statements are read; the
   * connection is closed once that read is over.
   */
  #resetFailed(conn: PoolConnection, error: unknown): void {
    const holder = this.#leased.get(conn)
    const sharers = this.#shared.drop(conn)
    this.#leased.delete(conn)
    if (holder !== undefined) this.#moved.add(holder)
    for (const sharer of sharers) this.#moved.add(sharer)
    // In each holder's own context (the reset's answer arrives in the connection's).
    if (holder !== undefined) inContextOf(holder, () => holder.reroute(conn))
    for (const sharer of sharers) inContextOf(sharer, () => sharer.reroute(conn))
    queueMicrotask(() => {
      this.emit('resetError', error instanceof Error ? error : new Error(String(error)))
      void this.#discard(conn, 'error', 0)
    })
  }

  #handOff(conn: PoolConnection): void {
    const waiter = this.#waiters.shift()
    if (waiter !== undefined) {
      this.#give(conn, waiter)
      if (waiter.pipelined) this.#fillShares(conn)
      // A waiter served leaves the queue as one that hung up does: pipelined waiters behind it
      // join the shared connections with room now (#fillAnyShares disarms an emptied queue's timer).
      this.#fillAnyShares()
      return
    }
    conn.idleSince = this.#clock.now()
    this.#idle.push(conn)
  }

  #give(conn: PoolConnection, waiter: Holder): void {
    const waited = this.#clock.now() - waiter.waitSince
    this.#lease(conn, waiter)
    if (!this.#moved.delete(waiter)) this.emit('acquire', waited)
    const resume = waiter.resume
    if (resume === undefined) {
      this.#endWait(waiter, waited, undefined)
      waiter.acquired(conn)
      return
    }
    resume(() => {
      this.#endWait(waiter, waited, undefined)
      waiter.acquired(conn)
    })
  }

  #disarmQueueTimer(): void {
    this.#clock.clearTimeout(this.#queueTimer)
    this.#queueTimer = undefined
  }

  /**
   * A waiter left the queue (hung up, timed out, served): pipelined waiters that queued behind it, as
   * behind any waiter for a connection of its own, join the shared connections with room now.
   */
  #fillAnyShares(): void {
    while (!this.#closing && this.#waiters.peek()?.pipelined) {
      const conn = this.#shared.leastBusy()
      if (conn === undefined) return
      const before = this.#waiters.length
      this.#fillShares(conn)
      if (this.#waiters.length === before) return
    }
    if (this.#waiters.length === 0) this.#disarmQueueTimer()
  }

  /** Pipelined waiters at the head of the queue join a shared connection, up to pipelineDepth. */
  #fillShares(conn: PoolConnection): void {
    if (!this.#shared.has(conn) || this.#closing) return
    while (this.#shared.hasRoom(conn) && this.#waiters.peek()?.pipelined) {
      this.#give(conn, this.#waiters.shift() as Holder)
    }
  }

  #discard(conn: PoolConnection, reason: CloseReason, graceSeconds = 1): Promise<void> {
    const known = this.#all.delete(conn)
    this.#owed.delete(conn)
    const cancelTimer = this.#awaitingCancel.get(conn)
    if (cancelTimer !== undefined) this.#clock.clearTimeout(cancelTimer)
    this.#awaitingCancel.delete(conn)
    this.#leased.delete(conn)
    this.#shared.drop(conn)
    const i = this.#idle.indexOf(conn)
    if (i !== -1) this.#idle.splice(i, 1)
    const ended = conn.end(reason, graceSeconds)
    if (known) this.emit('close', conn.closeReason ?? reason)
    if (this.#closing) {
      if (this.#heldCount === 0) this.#drained?.()
    } else {
      this.#grow()
    }
    return ended
  }

  /** Opens connections while callers wait (or `wanted` more are), and the pool is below max. */
  #grow(wanted = 0): void {
    while (
      !this.#closing &&
      !this.#connector.waiting &&
      // After a failed opening, one at a time until one succeeds: `max` logins at once with an
      // expired token (or against a full server) would all be refused, at every retry.
      !(this.#connector.failing && this.#connector.opening > 0) &&
      Math.max(this.#waiters.length, wanted) > this.#connector.opening &&
      this.#all.size + this.#connector.opening < this.options.max
    ) {
      this.#connector.open()
    }
  }

  #opened(conn: PoolConnection, ms: number): void {
    if (this.#closing || !conn.usable) {
      void conn.end('shutdown', 0)
      return
    }
    this.#all.add(conn)
    this.emit('connect', ms)
    this.#handOff(conn)
    // The opening that ended a run of failures was the only one: open for those still waiting.
    this.#grow()
  }

  #openFailed(error: unknown): void {
    const coded = this.#deps.connectError(error)
    this.emit('connectError', coded)
    // With no connection at all the database is unreachable: fail the waiters now rather than
    // let each run into acquireTimeout. Otherwise a retry follows (connector.ts).
    if (this.#all.size === 0 && this.#connector.opening === 0) {
      this.#disarmQueueTimer()
      for (const waiter of this.#waiters.drain()) {
        const waited = this.#clock.now() - waiter.waitSince
        this.emit('acquireError', 'error', waited)
        this.#endWait(waiter, waited, coded)
      }
    }
  }

  *#held(): Iterable<[PoolConnection, Iterable<[Holder, number]>]> {
    for (const [conn, holder] of this.#leased) yield [conn, [[holder, conn.leasedAt]]]
    yield* this.#shared.entries()
  }
}

/** Runs `fn` in the async context `holder` kept (Holder.resume), or as it is when it kept none. */
function inContextOf(holder: Holder, fn: () => void): void {
  const resume = holder.resume
  if (resume === undefined) fn()
  else resume(fn)
}

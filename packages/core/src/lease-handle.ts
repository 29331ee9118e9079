import { readFile } from 'node:fs'
import type postgres from 'postgres'
import type { ConnectionSlot, InternalQuery, QueryHandler } from './connection-slot.js'
import { channels, type QueryMessage, type TransactionMessage } from './diagnostics.js'
import { errors } from './errors.js'
import type { LeaseOwner, LeasePool, WaitToken } from './lease-pool.js'
import type { ResolvedPoolOptions } from './options.js'
import { isConnectionError, mayChangeSession, RESET_SESSION_SQL } from './session-state.js'

/** A query built by a lease handle; postgres.js calls resolve/reject as methods on it. */
interface TrackedQuery extends InternalQuery {
  /** The handle that built it (set once). */
  lease: LeaseHandle
  /** The handle while the query runs; cleared when it settles. */
  owner: LeaseHandle | undefined
  /** Sent by the onLease hook: runs before the holder's own queries. */
  setup?: boolean
  startedAt: number
  /** Diagnostics message while a subscriber listens. */
  message?: QueryMessage | undefined
  innerResolve: (value: unknown) => void
  innerReject: (error: unknown) => void
}

type QueryConstructor = new (
  strings: readonly string[],
  args: unknown[],
  handler: QueryHandler,
  canceller: (query: InternalQuery) => unknown,
  options?: object,
) => TrackedQuery

function resolveTracked(this: TrackedQuery, value: unknown): void {
  if (this.message !== undefined) endQueryMessage(this, value, undefined)
  this.owner?.settled(this, undefined)
  this.innerResolve(value)
}

function rejectTracked(this: TrackedQuery, error: unknown): void {
  if (this.message !== undefined) endQueryMessage(this, undefined, error)
  this.innerReject(this.owner ? this.owner.settled(this, error) : error)
}

function endQueryMessage(query: TrackedQuery, value: unknown, error: unknown): void {
  const message = query.message as QueryMessage
  query.message = undefined
  const result = value as { command?: string; count?: number | null } | undefined
  message.command = result?.command
  message.rowCount = result?.count ?? undefined
  message.error = error
  channels.queryEnd.publish(message)
}

/**
 * Subclasses postgres.js's Query so that every way a query can end (result, error, cursor end,
 * cancel) passes through the handle that sent it: the lease goes back only when nothing runs.
 * postgres.js reassigns resolve/reject (cursors do, per batch), hence accessors, not a wrapper.
 */
function trackedQueryClass(Query: new (...args: never[]) => InternalQuery): QueryConstructor {
  const Tracked = class extends (Query as unknown as new (...args: unknown[]) => object) {}
  Object.defineProperties(Tracked.prototype, {
    resolve: {
      get: () => resolveTracked,
      set(this: TrackedQuery, fn: (value: unknown) => void) {
        this.innerResolve = fn
      },
    },
    reject: {
      get: () => rejectTracked,
      set(this: TrackedQuery, fn: (error: unknown) => void) {
        this.innerReject = fn
      },
    },
  })
  return Tracked as unknown as QueryConstructor
}

/** What every handle of one plugin instance shares. */
export interface HandleContext {
  readonly pool: LeasePool
  readonly options: ResolvedPoolOptions
  /** A postgres.js client that never connects: helpers, json, array, typed. */
  readonly helpers: postgres.Sql<{}>
  readonly Query: QueryConstructor
  readonly onLeak: (handle: LeaseHandle, heldMs: number) => void
}

export function createHandleContext(
  pool: LeasePool,
  helpers: postgres.Sql<{}>,
  onLeak: HandleContext['onLeak'],
): HandleContext {
  const Query = (helpers`select 1` as unknown as InternalQuery).constructor as new (...args: never[]) => InternalQuery
  return { pool, options: pool.options, helpers, Query: trackedQueryClass(Query), onLeak }
}

export type FinishMode = 'commit' | 'rollback' | 'abort'

export interface HandleSettings {
  /** Route template (or 'app.db') for release events and leak warnings. */
  readonly route: string
  /** The request holding the lease, for leak warnings (opaque here). */
  readonly request?: unknown
  /** BEGIN statement when the whole lease is one transaction. */
  readonly begin?: string | undefined
  /** Aborts waiting for a connection (the request's signal, when it has a handlerTimeout). */
  readonly signal?: (() => AbortSignal | undefined) | undefined
  /**
   * Share a connection with other pipelined holders (`config.db.pipeline`): statements queue
   * on it behind theirs; no transaction blocks; in-flight statements are never cancelled.
   */
  readonly pipelined?: boolean | undefined
  /** Release as soon as the first query settles (app.db one-shot queries). */
  readonly oneShot?: boolean | undefined
  /** Called once, when the lease gets its connection. */
  readonly onAttach?: (() => void) | undefined
  /**
   * Runs when the lease gets its connection (after the route's BEGIN), before any of the
   * holder's queries; its own queries go through `handle.setupView()`.
   */
  readonly onLease?: (() => Promise<void>) | undefined
}

/** What the query API needs from a handle (a handle, or its setup view for onLease). */
export interface QuerySource {
  readonly inTransaction: boolean
  query(strings: readonly string[], args: unknown[], options?: object): InternalQuery
  file(path: string, args: unknown[], options: object): InternalQuery
  block<T>(fn: (sql: postgres.Sql<{}>) => Promise<T>): Promise<T>
  nextSavepoint(): string
}

/**
 * One holder's view of one connection: leased on the first query, returned exactly once when
 * the holder is finished and every query it sent has settled.
 */
export class LeaseHandle implements LeaseOwner {
  readonly #ctx: HandleContext
  readonly settings: HandleSettings
  readonly #inflight = new Set<TrackedQuery>()
  /** Queries waiting for the connection (allocated when one has to wait). */
  #pending: TrackedQuery[] | undefined
  /** The holder's queries that wait for onLease to finish. */
  #held: TrackedQuery[] | undefined
  #preparing = false
  #setupError: unknown
  #slot: ConnectionSlot | undefined
  #acquisition: Promise<ConnectionSlot> | undefined
  #wait: WaitToken | undefined
  #completing = false
  #transactionBlocks = 0
  #savepoints = 0
  #dirty = false
  #begun = false
  #finishing: Promise<void> | undefined
  #mode: FinishMode | undefined
  #whenIdle: (() => void) | undefined
  // postgres.js calls these with the query; one pair for every handle, not two closures each.
  static readonly #dispatchQuery: QueryHandler = (query) => {
    const tracked = query as TrackedQuery
    tracked.lease.#dispatch(tracked)
  }
  static readonly #cancelQuery = (query: InternalQuery): unknown => {
    const tracked = query as TrackedQuery
    return tracked.lease.#cancel(tracked)
  }

  #transaction: TransactionMessage | undefined

  constructor(ctx: HandleContext, settings: HandleSettings) {
    this.#ctx = ctx
    this.settings = settings
  }

  get route(): string {
    return this.settings.route
  }

  #newQuery(strings: readonly string[], args: unknown[], handler: QueryHandler, options?: object): TrackedQuery {
    const query = new this.#ctx.Query(strings, args, handler, LeaseHandle.#cancelQuery, options)
    query.lease = this
    return query
  }

  get pipelined(): boolean {
    return this.settings.pipelined === true
  }

  get leased(): boolean {
    return this.#slot !== undefined
  }

  get finished(): boolean {
    return this.#mode !== undefined
  }

  get inTransaction(): boolean {
    return this.settings.begin !== undefined
  }

  /** The backend pid of the leased connection (0 before the first query). */
  get pid(): number {
    return this.#slot?.pid ?? 0
  }

  get #busy(): boolean {
    return (
      this.#inflight.size > 0 ||
      (this.#pending?.length ?? 0) > 0 ||
      (this.#held?.length ?? 0) > 0 ||
      this.#preparing ||
      this.#acquisition !== undefined ||
      this.#transactionBlocks > 0
    )
  }

  query(strings: readonly string[], args: unknown[], options?: object): TrackedQuery {
    return this.#newQuery(strings, args, LeaseHandle.#dispatchQuery, options)
  }

  /** The query API for the onLease hook: its queries skip the wait for onLease itself. */
  setupView(): QuerySource {
    return {
      inTransaction: this.inTransaction,
      query: (strings, args, options) => {
        const query = this.query(strings, args, options)
        query.setup = true
        return query
      },
      file: (path, args, options) => {
        const query = this.file(path, args, options)
        query.setup = true
        return query
      },
      block: (fn) => this.block(fn),
      nextSavepoint: () => this.nextSavepoint(),
    }
  }

  file(path: string, args: unknown[], options: object): TrackedQuery {
    const handler: QueryHandler = (query) =>
      readFile(path, 'utf8', (error, text) => {
        if (error) return query.reject(error)
        query.strings = [text]
        this.#dispatch(query as TrackedQuery)
      })
    return this.#newQuery([], args, handler, options)
  }

  /** A connection for work that bypasses per-query tracking (postgres.js begin). */
  async block<T>(fn: (sql: postgres.Sql<{}>) => Promise<T>): Promise<T> {
    if (this.#mode !== undefined) throw new errors.FST_PG_POOL_RELEASED()
    if (this.pipelined) throw new errors.FST_PG_POOL_PIPELINED(this.settings.route, 'a transaction')
    this.#transactionBlocks++
    // Statements run by postgres.js's begin() bypass #send and its session check, and a plain
    // SET, a session lock or a temp table outlives the COMMIT: reset after, to be safe.
    this.#dirty = true
    try {
      const slot = this.#slot ?? (await this.#lease())
      return await fn(slot.sql)
    } catch (error) {
      throw this.#translate(error)
    } finally {
      this.#transactionBlocks--
      this.#maybeIdle()
    }
  }

  nextSavepoint(): string {
    return `fpp_sp_${++this.#savepoints}`
  }

  /**
   * Ends the lease: no new query is accepted; 'abort' also cancels what runs. Resolves once
   * the connection is back in the pool. With a route transaction, 'commit' rejects with
   * FST_PG_POOL_COMMIT_FAILED if the server did not commit. Idempotent.
   */
  finish(mode: FinishMode): Promise<void> {
    if (this.#finishing) {
      if (mode === 'abort' && this.#mode !== 'abort') this.#abortInflight()
      return this.#finishing
    }
    this.#mode = mode
    if (mode === 'abort') this.#abortInflight()
    this.#finishing = this.#busy
      ? new Promise<void>((resolve) => {
          this.#whenIdle = resolve
        }).then(() => this.#complete())
      : this.#complete()
    return this.#finishing
  }

  // LeaseOwner
  oldestQueryStart(): number {
    for (const query of this.#inflight) return query.startedAt
    return 0
  }

  onDeadline(): void {}

  onLeak(heldMs: number): void {
    this.#ctx.onLeak(this, heldMs)
  }

  abort(): void {
    this.finish('abort').catch(() => {})
  }

  /** Called by a tracked query when it ends; returns the error its caller should see. */
  settled(query: TrackedQuery, error: unknown): unknown {
    query.owner = undefined
    this.#inflight.delete(query)
    if (this.pipelined) this.#ctx.pool.sharedQueries--
    const out = error === undefined ? undefined : this.#translate(error)
    if (this.settings.oneShot && this.#mode === undefined && !this.#busy) void this.finish('commit')
    this.#maybeIdle()
    return out
  }

  #translate(error: unknown): unknown {
    const slot = this.#slot
    if (slot?.closeReason === 'deadline') {
      return withCause(new errors.FST_PG_POOL_QUERY_TIMEOUT(this.#ctx.options.statementTimeout), error)
    }
    if (isConnectionError(error)) {
      slot?.markClosed('error')
      const code = (error as { code: unknown }).code
      return withCause(new errors.FST_PG_POOL_CONNECTION_LOST(String(code)), error)
    }
    if ((error as { code?: unknown } | null)?.code === QUERY_CANCELED) {
      // Cancelled by the pool itself (client gone, handlerTimeout, close past closeTimeout),
      // or by the server's statement_timeout: coded 503s like their client-side counterparts.
      if (this.#mode === 'abort') {
        return withCause(
          this.#ctx.pool.stats().accepting ? new errors.FST_PG_POOL_ABORTED() : new errors.FST_PG_POOL_CLOSED(),
          error,
        )
      }
      if (String((error as { message?: unknown }).message).includes('statement timeout')) {
        return withCause(new errors.FST_PG_POOL_QUERY_TIMEOUT(this.#ctx.options.statementTimeout), error)
      }
    }
    return error
  }

  #maybeIdle(): void {
    if (this.#whenIdle !== undefined && !this.#busy) {
      const resolve = this.#whenIdle
      this.#whenIdle = undefined
      resolve()
    }
  }

  #dispatch(query: TrackedQuery): void {
    // After finish() a query is still accepted while the lease waits for earlier ones (a
    // handler that outlived its response), but never once the lease is being returned.
    if (this.#completing || this.#mode === 'abort') {
      query.reject(new errors.FST_PG_POOL_RELEASED())
      return
    }
    if (this.#setupError !== undefined && !query.setup) {
      query.reject(this.#setupError)
      return
    }
    if (this.#slot) {
      this.#deliver(query)
      return
    }
    const slot = this.#acquisition ? undefined : this.#ctx.pool.tryAcquire(this)
    if (slot) {
      this.#attach(slot)
      this.#deliver(query)
      return
    }
    this.#pending ??= []
    this.#pending.push(query)
    this.#lease().catch(() => {})
  }

  /** One acquisition per handle, shared by every query that waits for it. */
  #lease(): Promise<ConnectionSlot> {
    if (this.#acquisition) return this.#acquisition
    this.#wait ??= { cancel: undefined }
    this.#acquisition = this.#ctx.pool.acquire(this, this.settings.signal?.(), this.#wait).then(
      (slot) => {
        this.#acquisition = undefined
        this.#attach(slot)
        for (const query of this.#takePending()) this.#deliver(query)
        return slot
      },
      (error: unknown) => {
        this.#acquisition = undefined
        for (const query of this.#takePending()) query.reject(error)
        this.#maybeIdle()
        throw error
      },
    )
    return this.#acquisition
  }

  #attach(slot: ConnectionSlot): void {
    this.#slot = slot
    this.settings.onAttach?.()
    if (this.settings.begin !== undefined) {
      this.#begun = true
      const pool = this.#ctx.pool.view
      if (channels.transactionStart.hasSubscribers && pool !== undefined) {
        this.#transaction = { pool, route: this.settings.route, kind: 'route', outcome: undefined, error: undefined }
        channels.transactionStart.publish(this.#transaction)
      }
      this.#internal(this.settings.begin).catch((error: unknown) => {
        // Queries pipelined behind a failed BEGIN would run outside the transaction:
        // cut the connection so they fail instead.
        slot.markClosed('error')
        void slot.end('error', 0)
        return error
      })
    }
    const onLease = this.settings.onLease
    if (onLease !== undefined) {
      this.#preparing = true
      onLease().then(
        () => {
          this.#preparing = false
          for (const query of this.#takeHeld()) this.#deliver(query)
          this.#maybeIdle()
        },
        (error: unknown) => {
          // The holder's queries must not run without the context the hook was to set.
          this.#preparing = false
          this.#setupError = error
          for (const query of this.#takeHeld()) query.reject(error)
          this.#maybeIdle()
        },
      )
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

  /** Sends a query now, or holds it while onLease prepares the connection. */
  #deliver(query: TrackedQuery): void {
    if (this.#preparing && !query.setup) {
      this.#held ??= []
      this.#held.push(query)
    } else this.#send(query)
  }

  #send(query: TrackedQuery): void {
    const slot = this.#slot as ConnectionSlot
    query.owner = this
    query.startedAt = Date.now()
    this.#inflight.add(query)
    if (this.pipelined) this.#ctx.pool.sharedQueries++
    if (!this.#dirty && this.#ctx.options.sessionReset === 'auto' && mayChangeSession(query.strings)) {
      this.#dirty = true
    }
    if (!slot.usable) {
      query.reject(new errors.FST_PG_POOL_CONNECTION_LOST(slot.closeReason ?? 'closed'))
      return
    }
    slot.send(query)
    const pool = this.#ctx.pool.view
    if (channels.queryStart.hasSubscribers && pool !== undefined) {
      query.message = {
        pool,
        route: this.settings.route,
        get text() {
          return (
            (query as unknown as { string?: string }).string ??
            query.strings.map((s, i) => (i === 0 ? s : `$${i}${s}`)).join('')
          )
        },
        command: undefined,
        rowCount: undefined,
        error: undefined,
      }
      channels.queryStart.publish(query.message)
    }
  }

  #cancel(query: TrackedQuery): unknown {
    for (const queue of [this.#pending, this.#held]) {
      if (queue === undefined) continue
      const i = queue.indexOf(query)
      if (i !== -1) {
        queue.splice(i, 1)
        query.reject(new errors.FST_PG_POOL_ABORTED())
        this.#maybeIdle()
        return undefined
      }
    }
    // On a shared connection a cancel request could stop another holder's statement.
    if (this.pipelined) return undefined
    return this.#slot?.cancelQuery(query).catch(() => {})
  }

  #abortInflight(): void {
    // A holder still queued for a connection leaves the queue (client gone, server closing).
    if (this.#acquisition) this.#wait?.cancel?.()
    for (const query of this.#takePending()) query.reject(new errors.FST_PG_POOL_ABORTED())
    for (const query of this.#takeHeld()) query.reject(new errors.FST_PG_POOL_ABORTED())
    // postgres.js's begin() runs its queries on the connection directly: only cutting the
    // connection stops them (and rolls their transaction back).
    if (this.#transactionBlocks > 0 && this.#slot) void this.#slot.end('error', 0)
    // A shared connection runs other holders' statements too: a cancel request could stop
    // one of theirs. Statements of pipelined routes run to their end.
    if (this.pipelined) return
    for (const query of this.#inflight) void query.cancel()
  }

  /** Sends a statement of the pool's own, tracked like any query. */
  #internal(text: string): Promise<postgres.RowList<postgres.Row[]>> {
    const query = this.#newQuery([text], [], LeaseHandle.#dispatchQuery, { simple: true, prepare: false })
    query.executed = true
    this.#send(query)
    return Promise.prototype.then.call(query, (x) => x) as Promise<postgres.RowList<postgres.Row[]>>
  }

  /** Returns the connection: at once when nothing has to run on it first. */
  #complete(): Promise<void> {
    this.#completing = true
    const slot = this.#slot
    if (slot === undefined) return finished
    const options = this.#ctx.options
    const reset = options.sessionReset === 'always' || (options.sessionReset === 'auto' && this.#dirty)
    // Nothing to send before the connection goes back (the common case): no async step. A
    // shared connection is reset by the pool once its last holder has left.
    if (!this.#begun && (!reset || options.pgbouncer || this.pipelined || !slot.usable)) {
      this.#ctx.pool.release(slot, this.settings.route, this, this.pipelined && reset && !options.pgbouncer)
      return finished
    }
    return this.#completeAsync(slot)
  }

  async #completeAsync(slot: ConnectionSlot): Promise<void> {
    const options = this.#ctx.options
    let failure: Error | undefined
    try {
      if (this.#begun && slot.usable) {
        if (this.#mode === 'commit') {
          try {
            const result = await this.#internal('COMMIT')
            if (result.command !== 'COMMIT') failure = new errors.FST_PG_POOL_COMMIT_FAILED('the server rolled back')
          } catch (error) {
            failure = withCause(new errors.FST_PG_POOL_COMMIT_FAILED(describeError(error)), error)
          }
        } else {
          await this.#internal('ROLLBACK').catch(() => slot.markClosed('error'))
        }
      } else if (this.#begun && this.#mode === 'commit') {
        failure = new errors.FST_PG_POOL_COMMIT_FAILED('the connection was lost')
      }
      const reset = options.sessionReset === 'always' || (options.sessionReset === 'auto' && this.#dirty)
      if (reset && !options.pgbouncer && slot.usable) {
        await this.#internal(RESET_SESSION_SQL).catch(() => slot.markClosed('error'))
      }
    } finally {
      this.#ctx.pool.release(slot, this.settings.route, this)
    }
    const message = this.#transaction
    if (message !== undefined) {
      this.#transaction = undefined
      message.outcome = failure ? 'commit_failed' : this.#mode === 'commit' ? 'commit' : 'rollback'
      message.error = failure
      channels.transactionEnd.publish(message)
    }
    if (failure) throw failure
  }
}

/** What finish() returns when the connection went back synchronously. */
export const finished: Promise<void> = Promise.resolve()

/** SQLSTATE query_canceled: a cancel request, or statement_timeout. */
const QUERY_CANCELED = '57014'

function withCause<E extends Error>(error: E, cause: unknown): E {
  Object.defineProperty(error, 'cause', { value: cause, enumerable: false, configurable: true })
  return error
}

function describeError(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'code' in error) return String(error.code)
  return 'unknown error'
}

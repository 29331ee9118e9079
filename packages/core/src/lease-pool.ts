import { EventEmitter } from 'node:events'
import type postgres from 'postgres'
import { type CloseReason, ConnectionSlot } from './connection-slot.js'
import { type AcquireMessage, channels } from './diagnostics.js'
import { errors } from './errors.js'
import type { ResolvedConnection, ResolvedPoolOptions } from './options.js'
import { redactSecret } from './redact.js'
import { RESET_SESSION_SQL } from './session-state.js'
import type { PgPoolView } from './types.js'
import { WaitQueue } from './wait-queue.js'

/** What a lease tells the pool about who holds it (for leak warnings and deadlines). */
export interface LeaseOwner {
  /** Route template (or 'app.db') for diagnostics. */
  readonly route?: string
  /** Shares a connection with other pipelined holders instead of holding one alone. */
  readonly pipelined?: boolean
  /** Start of the oldest query still running on the lease, or 0. */
  oldestQueryStart(): number
  /** The client-side query deadline passed: the slot is being destroyed. */
  onDeadline(): void
  /** The lease was held past `leakDetectionThreshold`. */
  onLeak(heldMs: number): void
  /** Cancel what runs and give the connection back (pool closing past its timeout). */
  abort(): void
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
  /** Connections held by a request or a job (alone, or shared by pipelined requests). */
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
  /** A request was refused by admission control (reported through the view's shed()). */
  shed: [reason: string, route: string]
}

/** Lets a caller take its acquire out of the queue. */
export interface WaitToken {
  cancel: (() => void) | undefined
}

interface Waiter {
  readonly owner: LeaseOwner
  readonly resolve: (slot: ConnectionSlot) => void
  readonly reject: (error: Error) => void
  readonly since: number
  timer: NodeJS.Timeout | undefined
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
}

const DEADLINE_GRACE_MS = 1_000
const CANCEL_GRACE_MS = 1_000

/**
 * A bounded pool of single-connection clients with its own FIFO wait queue. Counts are exact
 * because the pool, not postgres.js, decides which connection each caller gets.
 */
export class LeasePool extends EventEmitter<PoolEvents> {
  readonly options: ResolvedPoolOptions
  /** The read-only view, named in diagnostics messages (set by the plugin). */
  view: PgPoolView | undefined
  readonly #connection: ResolvedConnection
  readonly #slots = new Set<ConnectionSlot>()
  readonly #owners = new Map<ConnectionSlot, LeaseOwner>()
  /** Connections shared by pipelined holders: each holder, and when it joined. */
  readonly #shared = new Map<ConnectionSlot, Map<LeaseOwner, number>>()
  /** Shared connections a holder may have left session state on: reset before reuse. */
  readonly #sharedDirty = new WeakSet<ConnectionSlot>()
  #sharers = 0
  /** Statements of pipelined holders in flight (LeaseHandle counts them). */
  sharedQueries = 0
  /** Emptied holder maps, reused: a connection turns shared and back many times a second. */
  readonly #spareSharers: Map<LeaseOwner, number>[] = []
  readonly #idle: ConnectionSlot[] = []
  readonly #waiters = new WaitQueue<Waiter>()
  readonly #onNotice: (notice: postgres.Notice) => void
  readonly #housekeeping: NodeJS.Timeout
  readonly #arrayTypes: Record<number, number> | undefined
  #connecting = 0
  /** Connections being opened: close() gives them up too. */
  readonly #opening = new Set<ConnectionSlot>()
  #connectFailures = 0
  #retryTimer: NodeJS.Timeout | undefined
  #closing = false
  #ended: Promise<void> | undefined
  #drained: (() => void) | undefined

  constructor(
    connection: ResolvedConnection,
    options: ResolvedPoolOptions,
    onNotice: (notice: postgres.Notice) => void = () => {},
    arrayTypes?: Record<number, number>,
  ) {
    super()
    this.#arrayTypes = arrayTypes
    this.#connection = connection
    this.options = options
    this.#onNotice = onNotice
    const periods = [
      options.idleTimeout,
      options.maxLifetime,
      options.leakDetectionThreshold,
      options.statementTimeout > 0 ? options.statementTimeout + DEADLINE_GRACE_MS : 0,
    ].filter((x) => x > 0)
    const period = Math.min(1_000, Math.max(20, Math.min(...periods, 4_000) / 4))
    this.#housekeeping = setInterval(() => this.#sweep(), period).unref()
  }

  stats(): PoolStats {
    const head = this.#waiters.peek()
    return {
      max: this.options.max,
      open: this.#slots.size + this.#connecting,
      connecting: this.#connecting,
      idle: this.#idle.length,
      leased: this.#owners.size + this.#shared.size,
      shared: this.#shared.size,
      pipelined: this.#sharers,
      sharedQueries: this.sharedQueries,
      waiting: this.#waiters.length,
      maxWaiting: this.options.maxWaiting,
      waitingCap: this.#queueCap(),
      oldestWaitMs: head ? Date.now() - head.since : 0,
      accepting: !this.#closing,
    }
  }

  /** A connection now, or undefined when none is idle (nobody may be waiting ahead). */
  tryAcquire(owner: LeaseOwner): ConnectionSlot | undefined {
    if (this.#closing || this.#waiters.length > 0) return undefined
    let slot = this.#popIdle()
    // A pipelined holder takes an idle connection first, and only when there is none joins
    // the least busy shared one (while more connections open, up to max).
    if (slot === undefined && owner.pipelined) {
      slot = this.#leastShared()
      if (slot !== undefined && this.#connecting === 0) this.#grow(1)
    }
    if (slot === undefined) return undefined
    this.#lease(slot, owner)
    this.emit('acquire', 0)
    return slot
  }

  #popIdle(): ConnectionSlot | undefined {
    let slot = this.#idle.pop()
    // A connection the server closed while it sat idle (terminated, restarted) is replaced,
    // never handed out: the housekeeping sweep would only find it later.
    while (slot !== undefined && !slot.usable) {
      this.#discard(slot, 'error')
      slot = this.#idle.pop()
    }
    return slot
  }

  /**
   * Waiters allowed now: `maxWaiting`, or more while fewer connections are leased than `max`.
   * A request waiting for a connection the pool opens for it waits for no other request: with
   * `maxWaiting: 0` (no queue) or a cold pool, refusing it would refuse a pool with room.
   */
  #queueCap(): number {
    return Math.max(this.options.maxWaiting, this.options.max - this.#owners.size - this.#shared.size)
  }

  /** The usable shared connection with the fewest holders, below pipelineDepth. */
  #leastShared(): ConnectionSlot | undefined {
    let best: ConnectionSlot | undefined
    let fewest = this.options.pipelineDepth
    // Over the keys: `for (const [slot, sharers] of map)` allocated an entry array per connection
    // on every pipelined acquire (2.3% of a pipelined server's allocation, heap sampling).
    for (const slot of this.#shared.keys()) {
      const holders = (this.#shared.get(slot) as Map<LeaseOwner, number>).size
      if (holders < fewest && slot.usable) {
        best = slot
        fewest = holders
      }
    }
    return best
  }

  /**
   * Waits for a connection, first come first served; rejects with a coded error. A waiter
   * leaves the queue when `signal` aborts or when `token.cancel()` is called (set while it
   * waits: cheaper than an AbortSignal per request).
   */
  acquire(
    owner: LeaseOwner,
    signal?: AbortSignal,
    token?: WaitToken,
    timeoutMs = this.options.acquireTimeout,
  ): Promise<ConnectionSlot> {
    const now = this.tryAcquire(owner)
    if (now !== undefined) return Promise.resolve(now)
    if (this.#closing) return this.#refuse(new errors.FST_PG_POOL_CLOSED(), 'rejected')
    if (signal?.aborted) return this.#refuse(new errors.FST_PG_POOL_ABORTED(), 'aborted')
    if (this.#waiters.length >= this.#queueCap()) {
      return this.#refuse(new errors.FST_PG_POOL_QUEUE_FULL(this.options.maxWaiting), 'rejected')
    }
    let message: AcquireMessage | undefined
    if (channels.acquireStart.hasSubscribers && this.view !== undefined) {
      message = {
        pool: this.view,
        route: owner.route ?? 'unknown',
        queued: this.#waiters.length,
        waitMs: 0,
        error: undefined,
      }
      channels.acquireStart.publish(message)
    }
    const settle = (error: Error | undefined, since: number) => {
      if (message === undefined) return
      message.waitMs = Date.now() - since
      message.error = error
      channels.acquireEnd.publish(message)
    }
    return new Promise<ConnectionSlot>((resolve, reject) => {
      const waiter: Waiter = {
        owner,
        since: Date.now(),
        timer: undefined,
        signal,
        onAbort: undefined,
        resolve: (slot) => {
          this.#forget(waiter)
          this.#lease(slot, owner)
          this.emit('acquire', Date.now() - waiter.since)
          settle(undefined, waiter.since)
          resolve(slot)
        },
        reject: (error) => {
          this.#forget(waiter)
          settle(error, waiter.since)
          reject(error)
        },
      }
      if (token) {
        token.cancel = () => {
          if (!this.#waiters.remove(waiter)) return
          this.emit('acquireError', 'aborted', Date.now() - waiter.since)
          waiter.reject(new errors.FST_PG_POOL_ABORTED())
        }
      }
      waiter.timer = setTimeout(() => {
        this.#waiters.remove(waiter)
        this.emit('acquireError', 'timeout', Date.now() - waiter.since)
        waiter.reject(new errors.FST_PG_POOL_ACQUIRE_TIMEOUT(timeoutMs))
      }, timeoutMs)
      if (signal) {
        waiter.onAbort = () => {
          this.#waiters.remove(waiter)
          this.emit('acquireError', 'aborted', Date.now() - waiter.since)
          waiter.reject(new errors.FST_PG_POOL_ABORTED())
        }
        signal.addEventListener('abort', waiter.onAbort, { once: true })
      }
      this.#waiters.push(waiter)
      this.#grow()
    })
  }

  /**
   * Takes a connection back from `owner`. The caller guarantees nothing of its still runs on
   * it. A connection that saw a connection-level error, or outlived its lifetime, is closed
   * instead. `dirty`: a pipelined holder may have changed session state (reset before reuse).
   */
  release(slot: ConnectionSlot, route: string, owner?: LeaseOwner, dirty = false): void {
    const sharers = this.#shared.get(slot)
    if (sharers !== undefined) {
      const since = owner === undefined ? undefined : sharers.get(owner)
      if (since === undefined) return
      sharers.delete(owner as LeaseOwner)
      this.#sharers--
      if (dirty) this.#sharedDirty.add(slot)
      this.emit('release', Date.now() - since, route)
      if (sharers.size > 0) {
        this.#fillShares(slot)
        return
      }
      this.#shared.delete(slot)
      if (this.#spareSharers.length < this.options.max) this.#spareSharers.push(sharers)
      if (this.#sharedDirty.has(slot) && slot.usable && !this.#closing) {
        this.#resetShared(slot)
        return
      }
    } else {
      if (!this.#owners.delete(slot)) return
      this.emit('release', Date.now() - slot.leasedAt, route)
    }
    this.#free(slot)
  }

  #free(slot: ConnectionSlot): void {
    if (!slot.usable || this.#closing || Date.now() >= slot.expiresAt) {
      this.#discard(slot, slot.closeReason ?? (this.#closing ? 'shutdown' : 'lifetime'))
      return
    }
    this.#handOff(slot)
  }

  /** Resets a shared connection once its last holder left; held by the pool meanwhile. */
  #resetShared(slot: ConnectionSlot): void {
    this.#sharedDirty.delete(slot)
    const started = Date.now()
    slot.leasedAt = started
    // Its own holder, so that the sweep's query deadline covers the reset too.
    this.#owners.set(slot, { ...noOwner, oldestQueryStart: () => started })
    slot.sql.unsafe(RESET_SESSION_SQL).then(
      () => {
        if (this.#owners.delete(slot)) this.#free(slot)
      },
      () => {
        if (!this.#owners.delete(slot)) return
        slot.markClosed('error')
        this.#free(slot)
      },
    )
  }

  /** Pings the server on a fresh connection outside the lease queue; resolves with ms. */
  async ping(timeoutMs: number): Promise<number> {
    const slot = new ConnectionSlot(
      this.#connection,
      { ...this.options, connectTimeout: timeoutMs, applicationName: `${this.options.applicationName}/ping` },
      () => {},
    )
    const started = performance.now()
    try {
      await slot.open()
      return performance.now() - started
    } catch (error) {
      // The slot bounds its whole opening by timeoutMs: its connect timeout is the ping's.
      if ((error as { code?: unknown }).code === 'CONNECT_TIMEOUT')
        throw new errors.FST_PG_POOL_QUERY_TIMEOUT(timeoutMs)
      throw this.#connectError(error)
    } finally {
      void slot.end('shutdown', 0)
    }
  }

  /** Opens one connection and returns it to the pool: proves the database is reachable. */
  async warmUp(): Promise<void> {
    // Waits for the connect outcome itself, whatever acquireTimeout is: a server that never
    // answers fails with CONNECT_FAILED (connect timeout), not with an acquire timeout.
    const slot = await this.acquire(noOwner, undefined, undefined, this.options.connectTimeout + 1_000)
    this.release(slot, 'warm-up')
  }

  /**
   * Stops handing out connections, fails every waiter, waits up to `timeoutMs` for leases to
   * come back, then ends every connection (cutting any that still run a query).
   */
  end(timeoutMs = this.options.closeTimeout): Promise<void> {
    this.#ended ??= this.#end(timeoutMs)
    return this.#ended
  }

  async #end(timeoutMs: number): Promise<void> {
    this.#closing = true
    clearInterval(this.#housekeeping)
    clearTimeout(this.#retryTimer)
    for (const waiter of this.#waiters.drain()) {
      this.emit('acquireError', 'rejected', Date.now() - waiter.since)
      waiter.reject(new errors.FST_PG_POOL_CLOSED())
    }
    for (const slot of this.#idle.splice(0)) this.#discard(slot, 'shutdown')
    for (const slot of this.#opening) void slot.end('shutdown', 0)
    await this.#drain(timeoutMs)
    if (this.#held > 0) {
      // Cutting the socket alone would leave the server running the query (it notices a gone
      // client only when it writes): cancel first, then cut what is still there.
      for (const owner of this.#owners.values()) owner.abort()
      for (const sharers of this.#shared.values()) for (const owner of sharers.keys()) owner.abort()
      await this.#drain(CANCEL_GRACE_MS)
    }
    await Promise.all([...this.#slots].map((slot) => this.#discard(slot, 'shutdown', 0)))
  }

  /** Connections held, alone or shared. */
  get #held(): number {
    return this.#owners.size + this.#shared.size
  }

  async #drain(timeoutMs: number): Promise<void> {
    if (this.#held === 0 || timeoutMs <= 0) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      new Promise<void>((resolve) => {
        this.#drained = resolve
      }),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs)
      }),
    ])
    clearTimeout(timer)
  }

  #lease(slot: ConnectionSlot, owner: LeaseOwner): void {
    if (owner.pipelined) {
      let sharers = this.#shared.get(slot)
      if (sharers === undefined) {
        sharers = this.#spareSharers.pop() ?? new Map()
        this.#shared.set(slot, sharers)
      }
      sharers.set(owner, Date.now())
      this.#sharers++
      return
    }
    slot.leasedAt = Date.now()
    this.#owners.set(slot, owner)
  }

  #refuse(error: Error, reason: AcquireFailure): Promise<never> {
    this.emit('acquireError', reason, 0)
    return Promise.reject(error)
  }

  #forget(waiter: Waiter): void {
    clearTimeout(waiter.timer)
    if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort)
  }

  #handOff(slot: ConnectionSlot): void {
    const waiter = this.#waiters.shift()
    if (waiter !== undefined) {
      waiter.resolve(slot)
      if (waiter.owner.pipelined) this.#fillShares(slot)
      return
    }
    slot.idleSince = Date.now()
    this.#idle.push(slot)
    if (this.#closing) this.#discard(slot, 'shutdown')
  }

  /** Pipelined waiters at the head of the queue join a shared connection, up to pipelineDepth. */
  #fillShares(slot: ConnectionSlot): void {
    const sharers = this.#shared.get(slot)
    if (sharers === undefined || !slot.usable || this.#closing) return
    while (sharers.size < this.options.pipelineDepth && this.#waiters.peek()?.owner.pipelined) {
      ;(this.#waiters.shift() as Waiter).resolve(slot)
    }
  }

  #discard(slot: ConnectionSlot, reason: CloseReason, graceSeconds = 1): Promise<void> {
    const known = this.#slots.delete(slot)
    this.#owners.delete(slot)
    const sharers = this.#shared.get(slot)
    if (sharers !== undefined) {
      this.#sharers -= sharers.size
      this.#shared.delete(slot)
    }
    const i = this.#idle.indexOf(slot)
    if (i !== -1) this.#idle.splice(i, 1)
    const ended = slot.end(reason, graceSeconds)
    if (known) this.emit('close', slot.closeReason ?? reason)
    if (this.#closing) {
      if (this.#held === 0) this.#drained?.()
    } else {
      this.#grow()
    }
    return ended
  }

  /** Opens connections while callers wait (or `wanted` more are), and the pool is below max. */
  #grow(wanted = 0): void {
    while (
      !this.#closing &&
      this.#retryTimer === undefined &&
      Math.max(this.#waiters.length, wanted) > this.#connecting &&
      this.#slots.size + this.#connecting < this.options.max
    ) {
      this.#connect()
    }
  }

  #connect(): void {
    this.#connecting++
    const started = performance.now()
    const slot = new ConnectionSlot(this.#connection, this.options, this.#onNotice)
    this.#opening.add(slot)
    slot.open(this.#arrayTypes).then(
      () => {
        this.#connecting--
        this.#opening.delete(slot)
        this.#connectFailures = 0
        if (this.#closing || !slot.usable) {
          void slot.end('shutdown', 0)
          return
        }
        this.#slots.add(slot)
        this.emit('connect', performance.now() - started)
        this.#handOff(slot)
      },
      (error: unknown) => {
        this.#connecting--
        this.#opening.delete(slot)
        void slot.end('error', 0)
        // An opening given up because the pool closes is not a connection error.
        if (this.#closing) return
        const coded = this.#connectError(error)
        this.emit('connectError', coded)
        // With no connection at all the database is unreachable: fail the waiters now rather
        // than let each run into acquireTimeout. Otherwise retry with a capped backoff.
        if (this.#slots.size === 0 && this.#connecting === 0) {
          for (const waiter of this.#waiters.drain()) {
            this.emit('acquireError', 'error', Date.now() - waiter.since)
            waiter.reject(coded)
          }
        }
        const delay = Math.min(1_000, 50 * 2 ** this.#connectFailures++)
        this.#retryTimer = setTimeout(() => {
          this.#retryTimer = undefined
          this.#grow()
        }, delay).unref()
      },
    )
  }

  #connectError(error: unknown): Error {
    if (error instanceof Error && 'code' in error && String(error.code).startsWith('FST_PG_POOL_')) return error
    const code = error instanceof Error && 'code' in error ? String(error.code) : 'unknown'
    const detail = error instanceof Error ? `${code}: ${error.message}` : code
    return new errors.FST_PG_POOL_CONNECT_FAILED(redactSecret(detail, this.#connection.secret))
  }

  #sweep(): void {
    const now = Date.now()
    const { idleTimeout, leakDetectionThreshold, statementTimeout } = this.options
    for (let i = this.#idle.length - 1; i >= 0; i--) {
      const slot = this.#idle[i]
      if (slot === undefined) continue
      if (now >= slot.expiresAt) this.#discard(slot, 'lifetime')
      else if (idleTimeout > 0 && now - slot.idleSince >= idleTimeout) this.#discard(slot, 'idle')
      else if (!slot.usable) this.#discard(slot, 'error')
    }
    const deadline = statementTimeout > 0 ? statementTimeout + DEADLINE_GRACE_MS : 0
    for (const [slot, owner] of this.#owners) {
      this.#checkLeak(owner, now - slot.leasedAt, leakDetectionThreshold)
      if (deadline > 0 && passed(owner.oldestQueryStart(), now, deadline)) this.#pastDeadline(slot, [owner])
    }
    for (const [slot, sharers] of this.#shared) {
      let late = false
      for (const [owner, since] of sharers) {
        this.#checkLeak(owner, now - since, leakDetectionThreshold)
        late ||= deadline > 0 && passed(owner.oldestQueryStart(), now, deadline)
      }
      if (late) this.#pastDeadline(slot, [...sharers.keys()])
    }
  }

  #checkLeak(owner: LeaseOwner, held: number, threshold: number): void {
    if (threshold > 0 && held >= threshold && !leakWarned.has(owner)) {
      leakWarned.add(owner)
      this.emit('leak', held)
      owner.onLeak(held)
    }
  }

  /** A query on `slot` did not answer in time: the connection is cut, its holders' queries fail. */
  #pastDeadline(slot: ConnectionSlot, owners: LeaseOwner[]): void {
    slot.markClosed('deadline')
    for (const owner of owners) owner.onDeadline()
    void slot.end('deadline', 0)
  }
}

const passed = (started: number, now: number, limit: number) => started > 0 && now - started >= limit

// Per holder, not per connection: a connection that warned once must warn for its next holders.
const leakWarned = new WeakSet<LeaseOwner>()

const noOwner: LeaseOwner = { oldestQueryStart: () => 0, onDeadline() {}, onLeak() {}, abort() {} }

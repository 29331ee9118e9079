import type { PoolStats, ResolvedPoolOptions } from '@fastify-pg-pool/core'
import type { FakeClock } from '../../core/test/fake-clock.js'

/** The core's pool options, with these defaults (options.ts). */
export function poolOptions(given: Partial<ResolvedPoolOptions> & { max: number }): ResolvedPoolOptions {
  return Object.freeze({
    acquireTimeout: 5_000,
    maxWaiting: given.max * 10,
    idleTimeout: 30_000,
    maxLifetime: 1_800_000,
    maxPreparedStatements: 500,
    connectTimeout: 5_000,
    statementTimeout: 30_000,
    leakDetectionThreshold: 30_000,
    closeTimeout: 10_000,
    applicationName: 'test',
    pgbouncer: false,
    sessionReset: 'always',
    retryAfter: 1,
    lazy: false,
    instances: 1,
    pipelineDepth: 8,
    ...given,
  })
}

/** A view whose stats the test sets (admission's rules one at a time). */
export class StaticView {
  readonly options: ResolvedPoolOptions
  stats_: PoolStats
  /** Whether a pipelined request could still join a shared connection at the cap. */
  sharedRoom = false

  constructor(options: ResolvedPoolOptions, stats: Partial<PoolStats> = {}) {
    this.options = options
    this.stats_ = {
      max: options.max,
      open: options.max,
      connecting: 0,
      idle: 0,
      leased: options.max,
      shared: 0,
      pipelined: 0,
      sharedQueries: 0,
      waiting: 0,
      maxWaiting: options.maxWaiting,
      waitingCap: options.maxWaiting,
      oldestWaitMs: 0,
      accepting: true,
      ...stats,
    }
  }

  set(stats: Partial<PoolStats>): void {
    this.stats_ = { ...this.stats_, ...stats }
  }

  stats(): PoolStats {
    return this.stats_
  }

  wouldRefuse(pipelined = false): boolean {
    const { waiting, waitingCap, accepting } = this.stats_
    if (!accepting) return true
    if (waiting < waitingCap) return false
    return !(pipelined && waiting === 0 && this.sharedRoom)
  }
}

interface Conn {
  readonly index: number
  /** Holders sharing it (pipelined), or 0. */
  holders: number
  exclusive: boolean
  /** When the statements queued on it (shared) have all run. */
  busyUntil: number
}

interface Waiter {
  readonly pipelined: boolean
  readonly since: number
  readonly holdMs: number
  readonly done: (outcome: string) => void
  timer: object | undefined
}

export interface SimulatedPoolSettings {
  readonly options: ResolvedPoolOptions
  /** Connections open at the start: the one `register` opens (0 for a lazy pool). Default 1. */
  readonly warm?: number
  /** How long opening the n-th connection (from 0, the warm ones included) takes, ms. Default 1. */
  readonly connectMs?: (index: number) => number
}

/**
 * A pool on the fake clock, by the core's rules (pool.ts): exclusive leases handed FIFO to
 * waiters, the queue cap (`waitingCap`), connections opened while callers wait, and pipelined
 * requests sharing a connection up to `pipelineDepth`, their statements run one after another.
 * A request holds its connection for `holdMs` of statement time. It publishes what the real
 * view does: stats(), wouldRefuse(), options, and 'acquire'/'release' events.
 */
export class SimulatedPool {
  readonly options: ResolvedPoolOptions
  readonly #clock: FakeClock
  readonly #connectMs: (index: number) => number
  readonly #idle: Conn[] = []
  readonly #shared = new Set<Conn>()
  #exclusive = 0
  #all = 0
  #opening = 0
  #opened = 0
  readonly #waiters: Waiter[] = []
  #pipelined = 0
  #sharedQueries = 0
  readonly #onAcquire: ((waitMs: number) => void)[] = []
  readonly #onRelease: ((heldMs: number) => void)[] = []
  /** Connections opened (the warm ones included). */
  get opened(): number {
    return this.#opened
  }

  constructor(clock: FakeClock, settings: SimulatedPoolSettings) {
    this.#clock = clock
    this.options = settings.options
    this.#connectMs = settings.connectMs ?? (() => 1)
    for (let i = 0; i < (settings.warm ?? 1); i++) {
      this.#all++
      this.#idle.push(this.#conn())
    }
  }

  on(event: 'acquire' | 'release', listener: (ms: number) => void): void {
    ;(event === 'acquire' ? this.#onAcquire : this.#onRelease).push(listener)
  }

  stats(): PoolStats {
    const head = this.#waiters[0]
    return {
      max: this.options.max,
      open: this.#all + this.#opening,
      connecting: this.#opening,
      idle: this.#idle.length,
      leased: this.#held,
      shared: this.#shared.size,
      pipelined: this.#pipelined,
      sharedQueries: this.#sharedQueries,
      waiting: this.#waiters.length,
      maxWaiting: this.options.maxWaiting,
      waitingCap: this.#cap,
      oldestWaitMs: head === undefined ? 0 : this.#clock.now() - head.since,
      accepting: true,
    }
  }

  wouldRefuse(pipelined = false): boolean {
    if (this.#waiters.length < this.#cap) return false
    return !(pipelined && this.#waiters.length === 0 && this.#leastBusy() !== undefined)
  }

  /**
   * Runs a request's statement of `holdMs` on a connection: resolves 'ok' once it has run and
   * the connection is back, or the core's refusal code (queue full, acquire timeout).
   */
  run(holdMs: number, pipelined = false): Promise<string> {
    return new Promise((done) => {
      let conn = this.#waiters.length === 0 ? this.#idle.pop() : undefined
      if (conn === undefined && pipelined && this.#waiters.length === 0) {
        conn = this.#leastBusy()
        if (conn !== undefined && this.#opening === 0) this.#grow(1)
      }
      if (conn !== undefined) {
        this.#give(conn, { pipelined, since: this.#clock.now(), holdMs, done, timer: undefined })
        return
      }
      if (this.#waiters.length >= this.#cap) {
        done('FST_PG_POOL_QUEUE_FULL')
        return
      }
      const waiter: Waiter = { pipelined, since: this.#clock.now(), holdMs, done, timer: undefined }
      waiter.timer = this.#clock.setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1)
        done('FST_PG_POOL_ACQUIRE_TIMEOUT')
      }, this.options.acquireTimeout)
      this.#waiters.push(waiter)
      this.#grow()
    })
  }

  get #held(): number {
    return this.#exclusive + this.#shared.size
  }

  get #cap(): number {
    return Math.max(this.options.maxWaiting, this.options.max - this.#held)
  }

  #conn(): Conn {
    return { index: this.#opened++, holders: 0, exclusive: false, busyUntil: 0 }
  }

  #leastBusy(): Conn | undefined {
    let best: Conn | undefined
    for (const conn of this.#shared) {
      if (conn.holders < this.options.pipelineDepth && (best === undefined || conn.holders < best.holders)) best = conn
    }
    return best
  }

  #give(conn: Conn, waiter: Waiter): void {
    this.#clock.clearTimeout(waiter.timer)
    const now = this.#clock.now()
    for (const listener of this.#onAcquire) listener(now - waiter.since)
    if (!waiter.pipelined) {
      conn.exclusive = true
      this.#exclusive++
      this.#clock.setTimeout(() => {
        conn.exclusive = false
        this.#exclusive--
        for (const listener of this.#onRelease) listener(this.#clock.now() - now)
        this.#putBack(conn)
        waiter.done('ok')
      }, waiter.holdMs)
      return
    }
    // Statements on a shared connection run one after another.
    this.#shared.add(conn)
    conn.holders++
    this.#pipelined++
    this.#sharedQueries++
    const start = Math.max(now, conn.busyUntil)
    conn.busyUntil = start + waiter.holdMs
    this.#clock.setTimeout(() => {
      this.#sharedQueries--
      this.#pipelined--
      conn.holders--
      for (const listener of this.#onRelease) listener(this.#clock.now() - now)
      if (conn.holders > 0) this.#fillShares(conn)
      else {
        this.#shared.delete(conn)
        this.#putBack(conn)
      }
      waiter.done('ok')
    }, conn.busyUntil - now)
  }

  #putBack(conn: Conn): void {
    const waiter = this.#waiters.shift()
    if (waiter === undefined) {
      this.#idle.push(conn)
      return
    }
    this.#give(conn, waiter)
    if (waiter.pipelined) this.#fillShares(conn)
  }

  #fillShares(conn: Conn): void {
    while (conn.holders < this.options.pipelineDepth && this.#waiters[0]?.pipelined) {
      this.#give(conn, this.#waiters.shift() as Waiter)
    }
  }

  #grow(wanted = 0): void {
    while (Math.max(this.#waiters.length, wanted) > this.#opening && this.#all + this.#opening < this.options.max) {
      this.#opening++
      const conn = this.#conn()
      this.#clock.setTimeout(() => {
        this.#opening--
        this.#all++
        this.#putBack(conn)
      }, this.#connectMs(conn.index))
    }
  }
}

import type { Clock, TimerHandle } from './clock.js'
import type { ResolvedPoolOptions } from './options.js'
import type { CloseReason, PoolConnection } from './server-connection.js'

/**
 * How long past `statementTimeout` the client waits for an answer before it gives the statement
 * up and closes its connection: the server's own timeout normally answers first (57014), so
 * this only fires when the server cannot answer at all (frozen, or the network path gone).
 */
export const DEADLINE_GRACE_MS = 1_000
/** The sweep runs a quarter of the shortest period it watches, within these bounds. */
const MIN_PERIOD_MS = 20
const MAX_PERIOD_MS = 1_000

/** A lease as the sweep sees it. */
export interface SweptHolder {
  /** Start of the oldest statement still running, or 0. */
  oldestQueryStart(): number
}

/** What the sweep reads from, and acts on, the pool. */
export interface SweptPool<H extends SweptHolder> {
  /** Idle connections, oldest first. */
  idle(): readonly PoolConnection[]
  /** Connections held, each with its holders and when each got it. */
  held(): Iterable<[PoolConnection, Iterable<[H, number]>]>
  /** Closes an idle connection. */
  retire(conn: PoolConnection, reason: CloseReason): void
  /** `holder` has held its connection past leakDetectionThreshold (told once per holder). */
  leaked(holder: H, heldMs: number): void
  /** A statement on `conn` ran past its deadline: the connection is cut, its holders' statements fail. */
  pastDeadline(conn: PoolConnection): void
}

/** The sweep period for these options, ms. */
export function sweepPeriod(options: ResolvedPoolOptions): number {
  const periods = [
    options.idleTimeout,
    options.maxLifetime,
    options.leakDetectionThreshold,
    options.statementTimeout > 0 ? options.statementTimeout + DEADLINE_GRACE_MS : 0,
  ].filter((x) => x > 0)
  return Math.min(MAX_PERIOD_MS, Math.max(MIN_PERIOD_MS, Math.min(...periods, 4 * MAX_PERIOD_MS) / 4))
}

/**
 * The periodic sweep: idle timeout, lifetime and lost connections among the idle ones; leak
 * warnings and the client-side statement deadline among the held ones.
 */
export class Housekeeping<H extends SweptHolder> {
  readonly #clock: Clock
  readonly #options: ResolvedPoolOptions
  readonly #pool: SweptPool<H>
  readonly #period: number
  #timer: TimerHandle | undefined
  /** Per holder, not per connection: a connection that warned once must warn for its next holders. */
  readonly #warned = new WeakSet<H>()

  constructor(clock: Clock, options: ResolvedPoolOptions, pool: SweptPool<H>) {
    this.#clock = clock
    this.#options = options
    this.#pool = pool
    this.#period = sweepPeriod(options)
  }

  start(): void {
    this.#timer ??= this.#clock.setTimeout(this.#tick, this.#period)
  }

  stop(): void {
    this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
  }

  readonly #tick = (): void => {
    this.#timer = undefined
    this.sweep()
    this.start()
  }

  sweep(now = this.#clock.now()): void {
    const { idleTimeout, leakDetectionThreshold, statementTimeout } = this.#options
    for (const conn of [...this.#pool.idle()]) {
      if (now >= conn.expiresAt) this.#pool.retire(conn, 'lifetime')
      else if (idleTimeout > 0 && now - conn.idleSince >= idleTimeout) this.#pool.retire(conn, 'idle')
      else if (!conn.usable) this.#pool.retire(conn, conn.closeReason ?? 'error')
    }
    const deadline = statementTimeout > 0 ? statementTimeout + DEADLINE_GRACE_MS : 0
    const late: PoolConnection[] = []
    for (const [conn, holders] of this.#pool.held()) {
      let past = false
      for (const [holder, since] of holders) {
        if (leakDetectionThreshold > 0 && now - since >= leakDetectionThreshold && !this.#warned.has(holder)) {
          this.#warned.add(holder)
          this.#pool.leaked(holder, now - since)
        }
        // Written behind other statements (a transaction's, other pipelined requests'), it began
        // running only when the one ahead of it was answered: its deadline counts from there.
        const sent = holder.oldestQueryStart()
        const started = sent > 0 ? Math.max(sent, conn.answeredAt ?? 0) : 0
        past ||= deadline > 0 && started > 0 && now - started >= deadline
      }
      if (past) late.push(conn)
    }
    for (const conn of late) this.#pool.pastDeadline(conn)
  }
}

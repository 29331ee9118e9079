import type { PoolConnection } from './server-connection.js'
import { owedReset } from './session-reset.js'

/**
 * Connections shared by holders of pipelined routes (`config.db.pipeline`): their statements
 * queue on the connection behind each other's, as postgres.js pipelines its own pool. Which
 * holders share which connection, since when, and the reset owed once the last one leaves.
 */
export class SharedConnections<H> {
  readonly #depth: number
  /** Whether a connection may take new holders (false: it retires once its holders leave). */
  readonly #takesMore: (conn: PoolConnection) => boolean
  readonly #holders = new Map<PoolConnection, Map<H, number>>()
  /**
   * The reset to queue when a connection's last holder leaves: the one that also ends a
   * transaction a holder may have left open, whichever holder left first (owedReset).
   */
  readonly #resets = new Map<PoolConnection, string>()
  /** Emptied holder maps, reused: a connection turns shared and back many times a second. */
  readonly #spare: Map<H, number>[] = []
  #count = 0

  constructor(depth: number, takesMore: (conn: PoolConnection) => boolean = () => true) {
    this.#depth = depth
    this.#takesMore = takesMore
  }

  /** Connections shared now. */
  get size(): number {
    return this.#holders.size
  }

  /** Holders sharing a connection now. */
  get holders(): number {
    return this.#count
  }

  has(conn: PoolConnection): boolean {
    return this.#holders.has(conn)
  }

  /** Holders of `conn` (0 when it is not shared). */
  sharersOf(conn: PoolConnection): number {
    return this.#holders.get(conn)?.size ?? 0
  }

  /** The usable shared connection with the fewest holders below the depth, if any. */
  leastBusy(): PoolConnection | undefined {
    let best: PoolConnection | undefined
    let fewest = this.#depth
    for (const conn of this.#holders.keys()) {
      const holders = (this.#holders.get(conn) as Map<H, number>).size
      if (holders < fewest && conn.usable && conn.sharingPaused === 0 && this.#takesMore(conn)) {
        best = conn
        fewest = holders
      }
    }
    return best
  }

  /** Whether `conn` can take one more holder. */
  hasRoom(conn: PoolConnection): boolean {
    return this.sharersOf(conn) < this.#depth && conn.usable && conn.sharingPaused === 0 && this.#takesMore(conn)
  }

  join(conn: PoolConnection, holder: H, now: number): void {
    let holders = this.#holders.get(conn)
    if (holders === undefined) {
      holders = this.#spare.pop() ?? new Map()
      this.#holders.set(conn, holders)
    }
    holders.set(holder, now)
    this.#count++
  }

  /**
   * Takes `holder` off `conn`; returns when it joined, or undefined when it did not hold it.
   * `reset`: what the holder's statements may have left on the session.
   */
  leave(conn: PoolConnection, holder: H, reset: string | undefined): number | undefined {
    const holders = this.#holders.get(conn)
    const since = holders?.get(holder)
    if (holders === undefined || since === undefined) return undefined
    holders.delete(holder)
    this.#count--
    if (reset !== undefined) this.#resets.set(conn, owedReset(this.#resets.get(conn), reset))
    if (holders.size === 0) {
      this.#holders.delete(conn)
      if (this.#spare.length < 64) this.#spare.push(holders)
    }
    return since
  }

  /** The reset owed by a connection whose last holder left (and forgets it). */
  takeReset(conn: PoolConnection): string | undefined {
    const reset = this.#resets.get(conn)
    this.#resets.delete(conn)
    return reset
  }

  /** The holders of `conn` now. */
  holdersOf(conn: PoolConnection): Iterable<H> {
    return this.#holders.get(conn)?.keys() ?? []
  }

  /** Forgets a connection (closed); returns its holders. */
  drop(conn: PoolConnection): H[] {
    const holders = this.#holders.get(conn)
    this.#holders.delete(conn)
    this.#resets.delete(conn)
    if (holders === undefined) return []
    this.#count -= holders.size
    return [...holders.keys()]
  }

  /** Every shared connection with its holders and when each joined. */
  entries(): IterableIterator<[PoolConnection, Map<H, number>]> {
    return this.#holders.entries()
  }
}

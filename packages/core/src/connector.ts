import type { Clock, TimerHandle } from './clock.js'
import type { ConnectionFactory } from './connection-factory.js'
import type { PoolConnection } from './server-connection.js'

/** First wait before opening again after a failed attempt. */
export const RETRY_INITIAL_DELAY_MS = 50
/** Each failure in a row multiplies the wait by this. */
export const RETRY_BACKOFF = 2
/** The wait never grows past this: a database back from an outage is found within a second. */
export const RETRY_MAX_DELAY_MS = 1_000
/**
 * Share of the wait taken off at random: instances that lost their database together do not
 * all come back in the same millisecond.
 */
export const RETRY_JITTER = 0.5

export interface ConnectorEvents {
  /** A connection opened in `ms`. */
  opened(conn: PoolConnection, ms: number): void
  /** An attempt failed; a retry is scheduled. */
  failed(error: unknown): void
  /** The retry wait is over: open what is still needed. */
  retry(): void
}

/** The wait before the next attempt after `failures` failures in a row (1 for the first). */
export function retryDelay(failures: number, random: () => number = Math.random): number {
  const base = Math.min(RETRY_MAX_DELAY_MS, RETRY_INITIAL_DELAY_MS * RETRY_BACKOFF ** (failures - 1))
  return base * (1 - RETRY_JITTER * random())
}

/** Opens connections for the pool, and after a failure waits (with backoff) before the next. */
export class Connector {
  readonly #factory: ConnectionFactory
  readonly #clock: Clock
  readonly #events: ConnectorEvents
  readonly #random: () => number
  /** Openings in flight. */
  #opening = 0
  #failures = 0
  #retryTimer: TimerHandle | undefined
  #stopped = false
  /** Openings in flight, aborted when the pool closes. */
  readonly #inFlight = new Set<AbortController>()

  constructor(factory: ConnectionFactory, clock: Clock, events: ConnectorEvents, random: () => number = Math.random) {
    this.#factory = factory
    this.#clock = clock
    this.#events = events
    this.#random = random
  }

  get opening(): number {
    return this.#opening
  }

  /** An opening failed since the last one that succeeded. */
  get failing(): boolean {
    return this.#failures > 0
  }

  /** Waiting out a failure: nothing is opened until the retry. */
  get waiting(): boolean {
    return this.#retryTimer !== undefined
  }

  open(): void {
    this.#opening++
    const started = this.#clock.now()
    const controller = new AbortController()
    this.#inFlight.add(controller)
    this.#factory(controller.signal).then(
      (conn) => {
        this.#inFlight.delete(controller)
        this.#opening--
        if (this.#stopped) {
          void conn.end('shutdown', 0)
          return
        }
        this.#failures = 0
        this.#events.opened(conn, this.#clock.now() - started)
      },
      (error: unknown) => {
        this.#inFlight.delete(controller)
        this.#opening--
        if (this.#stopped) return
        this.#failures++
        this.#events.failed(error)
        // Openings failing together share one wait: a second timer would end the backoff early
        // and outlive stop().
        this.#clock.clearTimeout(this.#retryTimer)
        this.#retryTimer = this.#clock.setTimeout(
          () => {
            this.#retryTimer = undefined
            this.#events.retry()
          },
          retryDelay(this.#failures, this.#random),
        )
      },
    )
  }

  /** Stops retrying and gives up the openings in flight. */
  stop(): void {
    this.#stopped = true
    for (const controller of this.#inFlight) controller.abort()
    this.#inFlight.clear()
    this.#clock.clearTimeout(this.#retryTimer)
    this.#retryTimer = undefined
  }
}

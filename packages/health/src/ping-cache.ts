/** The outcome of one ping; `code` is a coded error name, never a message (it could name hosts). */
export interface PingResult {
  readonly ok: boolean
  /** Round trip (connect, authenticate, one query) in ms; time until failure when not ok. */
  readonly ms: number
  /** When the ping finished (epoch ms), for the report; never used to time the cache's window. */
  readonly at: number
  readonly code: string | undefined
  /** The server's SQLSTATE behind a failed opening (53300: no connection slot), when it gave one. */
  readonly serverCode?: string | undefined
  /**
   * A transaction-mode pooler refused the ping's connection at its own client limit: PgBouncer's
   * 08P01 "no more connections allowed" (max_client_conn), its 53300 of PostgreSQL's.
   */
  readonly poolerFull?: boolean | undefined
}

/** PgBouncer's refusal of a client connection at max_client_conn (SQLSTATE 08P01). */
const POOLER_FULL = /no more connections allowed/i

/**
 * One ping in flight at a time, its result reused for `ttl` ms: a probe storm reaches the
 * database at most once per window, and a down database is not hammered either. The window is
 * timed on a monotonic clock (`now`): on the wall clock, a step back (an NTP correction, a VM
 * resumed) kept a cached pass answering probes for as long as the clock went back, through an
 * outage.
 */
export class PingCache {
  readonly #ping: (timeoutMs: number) => Promise<number>
  readonly #timeout: number
  readonly #ttl: number
  readonly #now: () => number
  #last: PingResult | undefined
  /** When #last finished, on #now's scale. */
  #lastAt = 0
  #inFlight: Promise<PingResult> | undefined
  #passed = false

  constructor(
    ping: (timeoutMs: number) => Promise<number>,
    timeoutMs: number,
    ttl: number,
    now: () => number = () => performance.now(),
  ) {
    this.#ping = ping
    this.#timeout = timeoutMs
    this.#ttl = ttl
    this.#now = now
  }

  /** Whether any ping has succeeded yet. */
  get everPassed(): boolean {
    return this.#passed
  }

  get(): Promise<PingResult> {
    const last = this.#last
    if (last !== undefined && this.#now() - this.#lastAt < this.#ttl) return Promise.resolve(last)
    this.#inFlight ??= this.#run().finally(() => {
      this.#inFlight = undefined
    })
    return this.#inFlight
  }

  async #run(): Promise<PingResult> {
    const started = this.#now()
    let result: PingResult
    try {
      const ms = await this.#ping(this.#timeout)
      result = { ok: true, ms, at: Date.now(), code: undefined }
      this.#passed = true
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code
      const cause = (error as { cause?: { code?: unknown; message?: unknown } } | null)?.cause as
        | { code?: unknown; message?: unknown }
        | undefined
      const serverCode = cause?.code
      // Its message is only matched, never reported (a message could name hosts).
      const poolerFull = serverCode === '08P01' && typeof cause?.message === 'string' && POOLER_FULL.test(cause.message)
      result = {
        ok: false,
        ms: this.#now() - started,
        at: Date.now(),
        code: typeof code === 'string' && /^[A-Z0-9_]+$/.test(code) ? code : undefined,
        serverCode: typeof serverCode === 'string' && /^[0-9A-Z]{5}$/.test(serverCode) ? serverCode : undefined,
        ...(poolerFull ? { poolerFull: true } : {}),
      }
    }
    this.#last = result
    this.#lastAt = this.#now()
    return result
  }
}

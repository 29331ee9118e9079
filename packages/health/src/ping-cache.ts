/** The outcome of one ping; `code` is a coded error name, never a message (it could name hosts). */
export interface PingResult {
  readonly ok: boolean
  /** Round trip (connect, authenticate, one query) in ms; time until failure when not ok. */
  readonly ms: number
  /** When the ping finished (epoch ms). */
  readonly at: number
  readonly code: string | undefined
}

/**
 * One ping in flight at a time, its result reused for `ttl` ms: a probe storm reaches the
 * database at most once per window, and a down database is not hammered either.
 */
export class PingCache {
  readonly #ping: (timeoutMs: number) => Promise<number>
  readonly #timeout: number
  readonly #ttl: number
  #last: PingResult | undefined
  #inFlight: Promise<PingResult> | undefined
  #passed = false

  constructor(ping: (timeoutMs: number) => Promise<number>, timeoutMs: number, ttl: number) {
    this.#ping = ping
    this.#timeout = timeoutMs
    this.#ttl = ttl
  }

  /** Whether any ping has succeeded yet. */
  get everPassed(): boolean {
    return this.#passed
  }

  get(): Promise<PingResult> {
    const last = this.#last
    if (last !== undefined && Date.now() - last.at < this.#ttl) return Promise.resolve(last)
    this.#inFlight ??= this.#run().finally(() => {
      this.#inFlight = undefined
    })
    return this.#inFlight
  }

  async #run(): Promise<PingResult> {
    const started = performance.now()
    let result: PingResult
    try {
      const ms = await this.#ping(this.#timeout)
      result = { ok: true, ms, at: Date.now(), code: undefined }
      this.#passed = true
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code
      result = {
        ok: false,
        ms: performance.now() - started,
        at: Date.now(),
        code: typeof code === 'string' && /^[A-Z0-9_]+$/.test(code) ? code : undefined,
      }
    }
    this.#last = result
    return result
  }
}

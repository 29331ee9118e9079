/**
 * Keeps a label's distinct values under a limit: the first `limit` values pass through, later
 * ones share `overflow`. Route templates are few in most apps; the cap protects the time series
 * database from an app that registers routes by the thousand.
 */
export class BoundedLabel {
  readonly #seen = new Set<string>()
  readonly #limit: number
  readonly #overflow: string

  constructor(limit: number, overflow = 'other') {
    this.#limit = limit
    this.#overflow = overflow
  }

  value(raw: string): string {
    if (this.#seen.has(raw)) return raw
    if (this.#seen.size >= this.#limit) return this.#overflow
    this.#seen.add(raw)
    return raw
  }
}

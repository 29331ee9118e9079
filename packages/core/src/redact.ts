/**
 * Replaces the password of any URL inside `text` (`scheme://user:password@`) with `***`: up to
 * the last `@` of its line, since a password written unencoded may hold an `@` or a space (more
 * is hidden then, never less); and a password in its query (secretQuery).
 */
export function redactUrls(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)[^\n]*@/gi, '$1***@').replace(secretQuery, '$1***')
}

/**
 * A secret in a URL's query (`?password=`, libpq's `sslpassword=`), up to the next `&` or the end
 * of its word; the name in any case.
 */
const secretQuery = /([?&](?:ssl)?pass(?:word)?=)[^&\s'"]*/gi

/**
 * Passwords a `connection.password` function returned, most recent last. A token lives for
 * minutes and a connection opened with it for up to maxLifetime, so the last few cover every
 * connection still open; older ones are forgotten rather than kept for the life of the process.
 */
export const RECENT_SECRETS = 16

/** The secrets of one connection: the configured password, if any, and the recent passwords. */
export class Secrets implements Iterable<string> {
  readonly #fixed: string | undefined
  /** Insertion order is recency: a value returned again moves to the end. */
  readonly #recent = new Set<string>()

  constructor(fixed: string | undefined) {
    this.#fixed = fixed || undefined
  }

  /** Remembers a password a function returned, forgetting the oldest past RECENT_SECRETS. */
  remember(secret: string): void {
    if (secret === '' || secret === this.#fixed) return
    this.#recent.delete(secret)
    this.#recent.add(secret)
    if (this.#recent.size > RECENT_SECRETS) {
      const [oldest] = this.#recent
      if (oldest !== undefined) this.#recent.delete(oldest)
    }
  }

  *[Symbol.iterator](): Iterator<string> {
    if (this.#fixed !== undefined) yield this.#fixed
    yield* this.#recent
  }
}

/** Removes every occurrence of known secrets (raw and URL-encoded) from `text`. */
export function redactSecret(text: string, secrets: string | Iterable<string> | undefined): string {
  let out = redactUrls(text)
  const all = typeof secrets === 'string' ? [secrets] : (secrets ?? [])
  // Longest first: a secret that contains another is removed whole.
  for (const secret of [...all].sort((a, b) => b.length - a.length)) {
    if (!secret) continue
    out = out.split(secret).join('***')
    const encoded = encodeURIComponent(secret)
    if (encoded !== secret) out = out.split(encoded).join('***')
  }
  return out
}

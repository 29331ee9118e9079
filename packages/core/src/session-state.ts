/**
 * Whether a statement may leave state on its session that the next holder of the connection
 * would see. Errs on the side of yes: a false positive costs one reset round trip.
 */
const sessionChanging =
  /(?:^|;)\s*(?:set|reset|listen|declare|prepare|load|discard|begin|start\s+transaction|create\s+(?:global\s+|local\s+)?temp)|set_config|advisory_lock|\btemp(?:orary)?\b/i

const seen = new WeakMap<readonly string[], boolean>()

export function mayChangeSession(strings: readonly string[]): boolean {
  let verdict = seen.get(strings)
  if (verdict === undefined) {
    verdict = sessionChanging.test(strings.join(' '))
    // Template string arrays are the same object on every call of one call site.
    if (Object.isFrozen(strings)) seen.set(strings, verdict)
  }
  return verdict
}

/**
 * Puts a session back to the state it was opened in. Not DISCARD ALL: it drops the server's
 * prepared statements while postgres.js keeps its cache of them. RESET ALL leaves the role
 * alone: without the explicit resets, a request's SET ROLE would run the next one as that role.
 */
export const RESET_SESSION_SQL =
  'ROLLBACK; RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; DISCARD TEMP; UNLISTEN *; SELECT pg_advisory_unlock_all(); CLOSE ALL'

const connectionErrorCodes = new Set([
  'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED',
  'CONNECTION_ENDED',
  'CONNECT_TIMEOUT',
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  '57P01', // admin_shutdown (pg_terminate_backend)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
])

/** True when the error means the connection itself is unusable, not just the statement. */
export function isConnectionError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null || !('code' in error)) return false
  const code = String(error.code)
  return connectionErrorCodes.has(code) || code.startsWith('08')
}

import type { TransactionOutcome } from './diagnostics.js'
import { isConnectionError, withCause } from './error-mapping.js'
import { errors } from './errors.js'

/** What a transaction's end says about it: committed, refused, or unknown (no answer). */

/** SQLSTATEs serialization_failure and deadlock_detected: rolled back, worth running again. */
const RETRY_TRANSACTION: ReadonlySet<string> = new Set(['40001', '40P01'])

/** A COMMIT never sent: nothing was committed. */
export function commitLost(why: string): { outcome: TransactionOutcome; failure: Error } {
  return { outcome: 'commit_failed', failure: new errors.FST_PG_POOL_COMMIT_FAILED(why) }
}

/**
 * A COMMIT never sent because the connection was lost first (the server ended the idle
 * session, a network cut): nothing was committed, and running the request again is safe. The
 * same 503 with Retry-After as a connection lost under a statement, not a 500 no client retries.
 */
export function commitConnectionLost(reason: string): { outcome: TransactionOutcome; failure: Error } {
  return { outcome: 'commit_failed', failure: new errors.FST_PG_POOL_CONNECTION_LOST(reason) }
}

/** A COMMIT that failed: refused by the server, or no answer (unknown outcome). */
export function commitFailure(error: unknown): { outcome: TransactionOutcome; failure: Error } {
  const code = (error as { code?: unknown } | null)?.code
  // The pool's own cancel stopped the COMMIT (a handlerTimeout, the pool closing past
  // closeTimeout) and the server answered so: nothing was committed, the transaction rolled back.
  const cause = (error as { cause?: unknown } | null)?.cause
  if (
    (code === 'FST_PG_POOL_ABORTED' || code === 'FST_PG_POOL_CLOSED') &&
    (cause as { severity?: unknown } | null | undefined)?.severity !== undefined &&
    !isConnectionError(cause)
  ) {
    return { outcome: 'rollback', failure: error as Error }
  }
  const refused = (error as { severity?: unknown } | null)?.severity !== undefined && !isConnectionError(error)
  // A serialization failure or a deadlock at COMMIT (SSI reports most write skew there): the
  // server rolled the transaction back, and running it again may succeed. The caller gets the
  // mapped error itself, as for the same failure one statement earlier: `code` '40001' for a retry
  // loop, a 503 with Retry-After by the default mapping.
  if (refused && typeof code === 'string' && RETRY_TRANSACTION.has(code)) {
    return { outcome: 'commit_failed', failure: error as Error }
  }
  // The server answered with an error: it did not commit.
  if (refused) {
    return { outcome: 'commit_failed', failure: withCause(new errors.FST_PG_POOL_COMMIT_FAILED(String(code)), error) }
  }
  // Sent, and no answer: a lost connection, the deadline, the pool closing.
  const failure = new errors.FST_PG_POOL_COMMIT_UNKNOWN(typeof code === 'string' ? code : 'no answer')
  return { outcome: 'commit_unknown', failure: withCause(failure, error) }
}

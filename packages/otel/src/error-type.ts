/** How a failure is named on spans and metrics; never its message (see describeError). */
export interface ErrorDescription {
  /** `error.type`: the SQLSTATE, else the error's code, else its class name, else `_OTHER`. */
  readonly type: string
  /** `db.response.status_code`: the SQLSTATE, when the server answered with an error. */
  readonly status: string | undefined
}

const OTHER: ErrorDescription = Object.freeze({ type: '_OTHER', status: undefined })

/**
 * The SQLSTATE of an error the server sent: postgres.js's PostgresError, or the suite's mapped
 * error built from one (a subclass; both carry the server's `severity`). A client-side error
 * (CONNECTION_CLOSED, ECONNRESET) has a code too, but no severity.
 */
function sqlState(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined
  const { name, code, severity } = error as { name?: unknown; code?: unknown; severity?: unknown }
  if (typeof code !== 'string') return undefined
  return name === 'PostgresError' || typeof severity === 'string' ? code : undefined
}

/**
 * Names a failure by the conventions' rule for `error.type`: the server's SQLSTATE (also
 * looked up in `cause`: the suite wraps driver errors in its coded ones, and the original is
 * preferred), else the client's code (`CONNECTION_CLOSED`, `ECONNRESET`, `FST_PG_POOL_*`),
 * else the class name. Messages are never used: PostgreSQL quotes input values in some of
 * them (`invalid input syntax for type integer: "..."`), and those values are parameters.
 */
export function describeError(error: unknown): ErrorDescription {
  if (typeof error !== 'object' || error === null) return OTHER
  const state = sqlState(error) ?? sqlState((error as { cause?: unknown }).cause)
  if (state !== undefined) return { type: state, status: state }
  const { code, name } = error as { code?: unknown; name?: unknown }
  if (typeof code === 'string' && code !== '') return { type: code, status: undefined }
  if (typeof name === 'string' && name !== '' && name !== 'Error') return { type: name, status: undefined }
  return OTHER
}

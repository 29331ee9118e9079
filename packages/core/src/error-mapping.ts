import type * as PostgresTypes from 'postgres'
import postgres from 'postgres'
import { errors, retryableCodes } from './errors.js'
import { type CloseReason, QUERY_CANCELED } from './server-connection.js'

/**
 * HTTP status by SQLSTATE: a 5-character code, or a 2-character class. `false` lets PostgreSQL
 * errors through untouched (their server message then reaches the client's body).
 */
export type ErrorMapping = false | Readonly<Record<string, number>>

/**
 * Client-caused classes to 4xx; transient conditions (serialization failure, deadlock, too many
 * connections, a cancelled statement, the connection classes) to 503 with Retry-After; anything
 * else 500. Codes are looked up first, then their class.
 */
export const defaultErrorMapping: Readonly<Record<string, number>> = Object.freeze({
  '22': 400, // data exception: bad input (invalid_text_representation, numeric_value_out_of_range, ...)
  '23502': 400, // not_null_violation
  '23505': 409, // unique_violation
  '23503': 409, // foreign_key_violation
  '23514': 409, // check_violation
  '23P01': 409, // exclusion_violation
  '40001': 503, // serialization_failure
  '40P01': 503, // deadlock_detected
  '53300': 503, // too_many_connections
  '57014': 503, // query_canceled
  '08': 503, // connection exceptions
  '08P01': 500, // protocol_violation: reaches the mapping only as a statement's own (a Bind with too few values)
})

/** Names of the conditions clients most often meet (PostgreSQL's appendix A). */
const conditions: Readonly<Record<string, string>> = {
  '08000': 'connection_exception',
  '08003': 'connection_does_not_exist',
  '08006': 'connection_failure',
  '0A000': 'feature_not_supported',
  '21000': 'cardinality_violation',
  '22001': 'string_data_right_truncation',
  '22003': 'numeric_value_out_of_range',
  '22004': 'null_value_not_allowed',
  '22007': 'invalid_datetime_format',
  '22008': 'datetime_field_overflow',
  '22012': 'division_by_zero',
  '22023': 'invalid_parameter_value',
  '22P02': 'invalid_text_representation',
  '22P05': 'untranslatable_character',
  '23000': 'integrity_constraint_violation',
  '23001': 'restrict_violation',
  '23502': 'not_null_violation',
  '23503': 'foreign_key_violation',
  '23505': 'unique_violation',
  '23514': 'check_violation',
  '23P01': 'exclusion_violation',
  '25001': 'active_sql_transaction',
  '25006': 'read_only_sql_transaction',
  '25P02': 'in_failed_sql_transaction',
  '28000': 'invalid_authorization_specification',
  '28P01': 'invalid_password',
  '40001': 'serialization_failure',
  '40P01': 'deadlock_detected',
  '42501': 'insufficient_privilege',
  '42601': 'syntax_error',
  '42703': 'undefined_column',
  '42704': 'undefined_object',
  '42883': 'undefined_function',
  '42P01': 'undefined_table',
  '42P02': 'undefined_parameter',
  '53100': 'disk_full',
  '53200': 'out_of_memory',
  '53300': 'too_many_connections',
  '55000': 'object_not_in_prerequisite_state',
  '55P03': 'lock_not_available',
  '57014': 'query_canceled',
  '57P01': 'admin_shutdown',
  P0001: 'raise_exception',
  P0002: 'no_data_found',
  P0003: 'too_many_rows',
}

const summaries: Readonly<Record<number, string>> = {
  400: 'The database refused the request data',
  409: 'The request conflicts with data in the database',
  503: 'The database cannot serve the request now; retry later',
  500: 'The database could not run the request',
}

/** Fields of a PostgreSQL error that name things, never values: safe in logs. */
const namingFields = ['severity', 'schema_name', 'table_name', 'column_name', 'constraint_name', 'routine'] as const
/** Fields that may hold values or SQL text: kept on the error, hidden from serializers and logs. */
const valueFields = [
  'serverMessage',
  'detail',
  'hint',
  'where',
  'position',
  'internal_position',
  'internal_query',
  'data_type_name',
  'file',
  'line',
] as const

/**
 * A PostgreSQL error as the suite lets it out of `request.db`: the SQLSTATE in `code`, an HTTP
 * `statusCode` by the mapping, and a message that says what a client may know. Its `cause` is
 * what the log may know of the server's error (`loggedCause`). Still a `postgres.PostgresError`.
 */
/**
 * postgres.js's error class, typed through a type-only import: the declaration file then names
 * no default import of 'postgres', which CommonJS projects without esModuleInterop cannot
 * resolve (DatabaseError lost every field of its base there).
 */
const PostgresErrorBase: typeof PostgresTypes.PostgresError = postgres.PostgresError

export class DatabaseError extends PostgresErrorBase {
  declare readonly code: string
  declare readonly statusCode: number
  /** PostgreSQL's name for the SQLSTATE, when known. */
  declare readonly condition: string
  /** The server's own message (not enumerable: never in a log or a body; it may quote values). */
  declare readonly serverMessage: string
  declare readonly headers?: Record<string, string>
}

function statusOf(code: string, mapping: Readonly<Record<string, number>>): number {
  return mapping[code] ?? mapping[code.slice(0, 2)] ?? 500
}

/**
 * The server's error as a log may show it: pino prints a cause's message and stack. The server
 * quotes parameter values in messages of many classes (`${name}::regclass` gives
 * `relation "<value>" does not exist`, class 22 `invalid input syntax ...: "<value>"`, a
 * function's `raise exception` any text), so the message is kept only when the server points
 * into the statement text (`position`): such an error was raised while the statement was parsed,
 * before any parameter value was bound, and can quote only the statement. Any other message
 * becomes the condition; `detail`, `hint` and `where` never reach it. The stack keeps its frames
 * (postgres.js appends the query's call site), under the safe message.
 */
function loggedCause(error: PostgresTypes.PostgresError, code: string, condition: string): Error {
  const message =
    error.position !== undefined && error.position !== ''
      ? error.message
      : `${condition}: the server's message is withheld (it may quote a query parameter)`
  // `severity` too: it tells a server's SQLSTATE from a client's code (the otel package reads it).
  const cause = Object.assign(new Error(message), { code, condition, severity: error.severity })
  // Frames only past the server's message: a value could itself read like a frame.
  const stack = typeof error.stack === 'string' ? error.stack : ''
  const end = stack.indexOf(error.message)
  cause.stack = `Error: ${message}${end === -1 ? '' : stack.slice(end + error.message.length)}`
  return cause
}

export function isPostgresError(error: unknown): error is PostgresTypes.PostgresError {
  return error instanceof postgres.PostgresError || (error as { name?: unknown } | null)?.name === 'PostgresError'
}

export function toDatabaseError(
  error: PostgresTypes.PostgresError,
  mapping: Readonly<Record<string, number>>,
  retryAfter: number,
): DatabaseError {
  const code = String(error.code)
  const statusCode = statusOf(code, mapping)
  const condition = conditions[code] ?? `SQLSTATE ${code}`
  const summary = summaries[statusCode] ?? 'The database refused the request'
  const mapped = new DatabaseError({ message: `${summary} (${condition})` } as never)
  const fields: Record<string, unknown> = { code, statusCode, condition }
  for (const name of namingFields) {
    const value = (error as unknown as Record<string, unknown>)[name]
    if (value !== undefined) fields[name] = value
  }
  Object.assign(mapped, fields)
  for (const name of valueFields) {
    // The server's own message (a `raise exception` text a handler maps, say) as `serverMessage`.
    const value = name === 'serverMessage' ? error.message : (error as unknown as Record<string, unknown>)[name]
    if (value !== undefined) Object.defineProperty(mapped, name, { value, enumerable: false })
  }
  if (statusCode === 503) Object.assign(mapped, { headers: { 'retry-after': String(retryAfter) } })
  Object.defineProperty(mapped, 'cause', {
    value: loggedCause(error, code, condition),
    enumerable: false,
    configurable: true,
  })
  return mapped
}

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

/**
 * PostgreSQL's own refusal of a message it could not bind (`bind message supplies 1 parameters,
 * but prepared statement "" requires 2`: unsafe() given too few values): 08P01 at ERROR, from a
 * source file of the server's (a pooler's error names none), not raised by a function (`where`).
 * The session goes on, as after any statement error; one that ends it is FATAL.
 */
function refusedMessage(error: object): boolean {
  const { code, severity, file, where } = error as {
    code?: unknown
    severity?: unknown
    file?: unknown
    where?: unknown
  }
  return code === '08P01' && severity === 'ERROR' && typeof file === 'string' && where === undefined
}

/** True when the error means the connection itself is unusable, not just the statement. */
export function isConnectionError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null || !('code' in error)) return false
  const code = String(error.code)
  return (connectionErrorCodes.has(code) || code.startsWith('08')) && !refusedMessage(error)
}

/** Why a statement may have failed, as far as the lease knows. */
export interface FailureContext {
  /** Why its connection closed, if it did. */
  readonly closeReason: CloseReason | undefined
  /** The request ended (client gone, handlerTimeout, pool closing past its timeout). */
  readonly aborted: boolean
  /** The pool is closing. */
  readonly closing: boolean
  /**
   * The statement was the holder's own, sent outside any transaction the pool opened (a route
   * transaction, a begin() block): it commits on its own, so lost with its answer it may have run
   * and committed (an in-doubt commit), which a lost connection's error then says.
   */
  readonly autocommit?: boolean
}

export interface SurfaceSettings {
  readonly statementTimeout: number
  readonly retryAfter: number
  readonly mapping: ErrorMapping
}

/**
 * Sets `cause` (not enumerable) on one of the suite's coded errors; a PostgreSQL error as what the
 * log may know of it (loggedCause): a log prints a cause's message with its own, and the server's
 * message can quote a query parameter (a function's `raise exception ... using errcode = '08006'`).
 */
export function withCause<E extends Error>(error: E, cause: unknown): E {
  let value = cause
  if (isPostgresError(cause)) {
    const code = String(cause.code)
    value = loggedCause(cause, code, conditions[code] ?? `SQLSTATE ${code}`)
  }
  Object.defineProperty(error, 'cause', { value, enumerable: false, configurable: true })
  return error
}

/**
 * Classes of SQLSTATE the server answers a connection's opening with (connection exceptions,
 * authorization, an unknown database, too many connections, shutdown), and the server's source
 * files that refuse a login (permission denied for a database, one not accepting connections):
 * their messages name no query parameter, and say what the log reader needs (PgBouncer's `no more
 * connections allowed`).
 */
const openingClasses = new Set(['08', '28', '3D', '53', '57'])
const loginFiles = new Set(['postinit.c', 'auth.c', 'hba.c', 'miscinit.c'])

/** A refused login, not a statement's error: a function's raise has a context (`where`), whatever SQLSTATE it chose. */
function isLoginRefusal(error: PostgresTypes.PostgresError): boolean {
  if (error.where !== undefined) return false
  return openingClasses.has(String(error.code).slice(0, 2)) || loginFiles.has(String(error.file))
}

/**
 * FST_PG_POOL_CONNECT_FAILED for a connection that could not open, its driver's detail (host,
 * port, reason) as the cause: for logs, redacted, never in a client's body. A server error of a
 * statement run while opening (onConnect's: a function that raises with its argument, in any
 * class) is withheld like a statement's (loggedCause).
 */
export function connectFailure(error: unknown, redact: (text: string) => string): Error {
  const code = (error as { code?: unknown } | null)?.code ?? 'unknown'
  if (code === 'FST_PG_POOL_CONNECT_FAILED') return error as Error
  const coded = new errors.FST_PG_POOL_CONNECT_FAILED()
  const fromStatement = isPostgresError(error) && !isLoginRefusal(error)
  if (fromStatement) return withCause(coded, error)
  const message = error instanceof Error ? error.message : String(error)
  const detail = Object.assign(new Error(redact(`${String(code)}: ${message}`)), { code })
  Object.defineProperty(coded, 'cause', { value: detail, enumerable: false, configurable: true })
  return coded
}

/** Adds Retry-After to the suite's retryable 503s (Fastify's error handler sends `error.headers`). */
export function withRetryAfter<E>(error: E, retryAfter: number): E {
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string' && retryableCodes.has(code) && (error as { headers?: unknown }).headers === undefined) {
    Object.defineProperty(error, 'headers', {
      value: { 'retry-after': String(retryAfter) },
      enumerable: false,
      writable: true,
      configurable: true,
    })
  }
  return error
}

/** SQLSTATE in_failed_sql_transaction: refused inside a transaction an earlier statement aborted. */
const IN_FAILED_TRANSACTION = '25P02'

/** What FST_PG_POOL_QUERY_TIMEOUT names when the server's statement_timeout ended the statement. */
const SERVER_STATEMENT_TIMEOUT = "the server's statement_timeout"

/** What a failure of a statement that commits on its own, given up on without an answer, adds. */
function inDoubt(context: FailureContext): string {
  return context.autocommit === true
    ? '; the statement was sent outside a transaction and may have run and committed: retry only an idempotent request'
    : ''
}

/**
 * What a failed statement's caller sees: the suite's coded errors for what the pool caused or
 * saw (a lost connection, a deadline, an abort), PostgreSQL's errors mapped by SQLSTATE.
 */
export function surfaceError(error: unknown, context: FailureContext, settings: SurfaceSettings): unknown {
  const code = (error as { code?: unknown } | null)?.code
  let out: unknown = error
  if (typeof code === 'string' && code.startsWith('FST_')) {
    out = error
  } else if (context.closeReason === 'deadline') {
    // Given up on without an answer: a statement of its own may have committed before the server
    // froze, as under a lost connection. (Behind PgBouncer the server's answer to the cancel may
    // still be read: a 57014 says it did not commit.)
    const answered = isPostgresError(error) && !isConnectionError(error)
    out = withCause(
      new errors.FST_PG_POOL_QUERY_TIMEOUT(`${settings.statementTimeout} ms${answered ? '' : inDoubt(context)}`),
      error,
    )
  } else if (isConnectionError(error)) {
    if (context.aborted) {
      const ended = context.closing ? new errors.FST_PG_POOL_CLOSED() : new errors.FST_PG_POOL_ABORTED()
      // Its connection cut under it (close past closeTimeout): no answer, the same doubt.
      const doubt = inDoubt(context)
      if (doubt !== '') ended.message = `${ended.message} (${doubt.slice(2)})`
      out = withCause(ended, error)
    } else {
      out = withCause(new errors.FST_PG_POOL_CONNECTION_LOST(`${String(code)}${inDoubt(context)}`), error)
    }
  } else if ((code === QUERY_CANCELED || code === IN_FAILED_TRANSACTION) && context.aborted) {
    // Cancelled by the pool itself (client gone, handlerTimeout, close past closeTimeout), or sent
    // behind the cancelled statement in a route transaction, which the cancel aborted.
    out = withCause(context.closing ? new errors.FST_PG_POOL_CLOSED() : new errors.FST_PG_POOL_ABORTED(), error)
  } else if (
    code === QUERY_CANCELED &&
    String((error as { message?: unknown }).message).includes('statement timeout')
  ) {
    // The server's limit: the pool's, or one of the role, the database or the request's own SET.
    out = withCause(new errors.FST_PG_POOL_QUERY_TIMEOUT(SERVER_STATEMENT_TIMEOUT), error)
  } else if (settings.mapping !== false && isPostgresError(error)) {
    out = toDatabaseError(error, settings.mapping, settings.retryAfter)
  }
  return withRetryAfter(out, settings.retryAfter)
}

import { randomBytes } from 'node:crypto'
import type { TrackedQuery } from './postgres-adapter.js'

/**
 * What the pool sends on a connection between two holders, and when: the single owner of that
 * decision. The SQL text of a statement cannot tell whether it changed the session (a leading
 * comment, a function, a DO block, a SECURITY DEFINER routine can SET, set_config(..., false),
 * lock, LISTEN, PREPARE or create temp tables), so the default resets after every holder.
 *
 * - `always` (default): after every holder that ran a statement, the full reset below. It is
 *   queued on the connection when the holder leaves, not awaited: PostgreSQL runs the statements
 *   of a connection in order, and postgres.js writes the next holder's first statement behind
 *   it in the same write, so it costs the next holder no round trip.
 * - `rollback`: only ends a transaction the holder left open (what psycopg_pool does). Blind to
 *   everything else a session can hold; for apps whose statements change no session state.
 * - `never`: nothing (behind PgBouncer in transaction mode, where the server session is not ours).
 */
export type SessionReset = 'always' | 'rollback' | 'never'

/**
 * One message, one explicit transaction: if any statement of it fails (a session left in a
 * failed state, a statement_timeout the holder set, a SQL-level prepared statement, see below),
 * the transaction stays aborted and the next holder's statements behind it are refused by the
 * server (25P02) instead of running on an unreset session; the pool then retires the connection
 * and sends them again on another.
 *
 * SET SESSION AUTHORIZATION DEFAULT also resets the role (RESET ALL does not: role and session
 * authorization are outside it). Not DISCARD ALL: its DEALLOCATE ALL would drop postgres.js's
 * prepared statements, which it would then re-prepare in an extra round trip each (and fail
 * inside a transaction). SQL-level prepared statements (`PREPARE`, from any statement or
 * function) are detected instead, by RESET_CHECK (below): it fails when there is one, and the
 * connection, which alone can drop them cheaply, is retired.
 */
/**
 * The name of the reset's last step, prepared on each connection when it opens
 * (PREPARE_RESET_CHECK_SQL): prepared once, it is planned once, where the same SELECT in the
 * reset's simple-protocol message was planned on every reset (16 µs of PostgreSQL CPU and 10 µs
 * of Node CPU of the 56 µs and 56 µs the reset took, measured on PostgreSQL 18 with
 * bench/reset-cost.js). A request that drops it (`DEALLOCATE ALL`, `DISCARD ALL`) makes the next
 * reset fail (26000): fail-closed, the connection is retired like after any failed reset. The
 * name ends in a random suffix (one per process): SQL cannot put a statement of its own in the
 * check's place without first reading the name back from pg_prepared_statements, which is no
 * accident but an app setting out to defeat its own pool.
 */
export const RESET_CHECK = `fastify_pg_pool_reset_${randomBytes(6).toString('hex')}`

/**
 * No columns: postgres.js parses no row description for them. The unlock is a one-time filter,
 * evaluated once, whatever the check finds. The check reads the function, not the
 * pg_prepared_statements view (half the planning, measured), and fails on the first SQL-level
 * statement but its own: 1 / 0 for such a from_sql row (CASE fixes the order: a bare AND could
 * divide first). Its cost grows with the statements postgres.js prepared on the connection
 * (about 0.35 µs each on PostgreSQL 18, measured): the function returns them all.
 */
export const PREPARE_RESET_CHECK_SQL =
  `PREPARE ${RESET_CHECK} AS SELECT WHERE pg_catalog.pg_advisory_unlock_all() IS NULL OR EXISTS (` +
  `SELECT FROM pg_catalog.pg_prepared_statement() s WHERE CASE WHEN s.name = '${RESET_CHECK}' THEN false ELSE 1 / (s.from_sql::int - 1) = 0 END)`

const RESET_UNTIL_COMMIT =
  // Its isolation spelled out: a bare BEGIN would take the defaults the holder left (RESET ALL
  // comes too late for this transaction), and a serializable, read-only, deferrable one waits
  // for a safe snapshot, for as long as any serializable writer elsewhere stays open.
  'BEGIN ISOLATION LEVEL READ COMMITTED; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD TEMP; DISCARD SEQUENCES; UNLISTEN *; ' +
  `EXECUTE ${RESET_CHECK}`

/** After a holder whose session is known to be outside any transaction block. */
export const RESET_SQL = `${RESET_UNTIL_COMMIT}; COMMIT`

/**
 * After a holder that may have left a transaction block open (or failed): ROLLBACK first. In a
 * session already idle it draws a warning (25P01), which the pool does not log.
 */
export const RESET_AFTER_OPEN_SQL = `ROLLBACK; ${RESET_SQL}`

/**
 * What `onConnect` left on a new connection's session (settings, role), captured once as the
 * statements that restore it: the reset brings every session back to that state, not to a bare
 * one. Custom settings (`app.x`) are not listed by pg_settings, so they cannot be captured: give
 * those as startup parameters (`connection: { connection: { 'app.x': ... } }`), which RESET ALL keeps.
 */
export const CAPTURE_BASELINE_SQL = `SELECT
  (SELECT 'SELECT WHERE ARRAY[' || pg_catalog.string_agg(pg_catalog.format('pg_catalog.set_config(%L, %L, false)', name, setting), ', ') || '] IS NOT NULL'
     FROM pg_catalog.pg_settings WHERE source = 'session' AND name NOT IN ('role', 'session_authorization')) AS settings,
  CASE WHEN current_user <> session_user THEN pg_catalog.format('SET ROLE %I', current_user) END AS role`

export const ROLLBACK_SQL = 'ROLLBACK'

/** SQLSTATE of the warning a ROLLBACK outside a transaction draws. */
export const NO_ACTIVE_TRANSACTION = '25P01'

/**
 * Command tags after which a transaction block may be open (or aborted): BEGIN/START TRANSACTION
 * open one; COMMIT/ROLLBACK AND CHAIN open the next; SAVEPOINT and RELEASE only run inside one.
 * Only top-level statements can open a block: a function or DO block cannot leave one open.
 */
const transactionTags = new Set(['BEGIN', 'START TRANSACTION', 'COMMIT', 'ROLLBACK', 'SAVEPOINT', 'RELEASE'])

/**
 * Tracks, from the server's command tags (never from SQL text), whether a holder's session may
 * be inside a transaction block when it leaves.
 */
export class TransactionState {
  #mayBeOpen = false

  get mayBeOpen(): boolean {
    return this.#mayBeOpen
  }

  /** A statement of the holder's own succeeded with these command tags. */
  noteCommands(commands: readonly string[]): void {
    if (this.#mayBeOpen) return
    for (const command of commands) if (transactionTags.has(command)) this.#mayBeOpen = true
  }

  /**
   * A statement failed without telling which of its statements ran (a simple-protocol message
   * can hold several: `begin; insert ...`).
   */
  noteUnknown(): void {
    this.#mayBeOpen = true
  }

  /** The suite ended the transaction itself (its COMMIT or ROLLBACK was answered). */
  noteClosed(): void {
    this.#mayBeOpen = false
  }
}

/**
 * The statement to queue when a holder leaves, or undefined for none. `baseline`: the
 * statements that restore what onConnect set on the connection (inside the reset's transaction).
 * `restores`: settings the pool itself changed on the holder's session (its application_name
 * for `leaseApplicationName`, default_transaction_read_only for a read served by the primary);
 * the full reset undoes them with everything else, the cheaper modes reset those settings (and
 * what onConnect set, which may have been one of them) so that no holder inherits them.
 */
export function resetStatement(
  mode: SessionReset,
  ranStatements: boolean,
  transactionMayBeOpen: boolean,
  baseline?: string,
  restores: readonly string[] = [],
): string | undefined {
  if (mode !== 'always') {
    const parts = [
      ...(mode === 'rollback' && transactionMayBeOpen ? [ROLLBACK_SQL] : []),
      ...restores.map((setting) => `RESET ${setting}`),
      ...(restores.length > 0 && baseline !== undefined ? [baseline] : []),
    ]
    return parts.length === 0 ? undefined : parts.join('; ')
  }
  if (!ranStatements) return undefined
  const reset = baseline === undefined ? RESET_SQL : `${RESET_UNTIL_COMMIT}; ${baseline}; COMMIT`
  return transactionMayBeOpen ? `ROLLBACK; ${reset}` : reset
}

/**
 * What a connection owes after several holders asked for a reset (pipelined holders, between
 * which none is sent): the one that also ends a transaction one of them may have left open.
 */
export function owedReset(owed: string | undefined, asked: string): string {
  if (owed === undefined) return asked
  return owed.startsWith(ROLLBACK_SQL) || !asked.startsWith(ROLLBACK_SQL) ? owed : asked
}

/**
 * What a statement written behind a reset could do if the reset failed. A failed reset leaves
 * its transaction aborted, and PostgreSQL refuses every statement there (25P02) except one that
 * ends the transaction (ROLLBACK, ABORT, COMMIT, END, PREPARE TRANSACTION); after that one,
 * whatever else was written would run on the session the reset did not clean, and run a second
 * time on the connection its holder is sent to. The connection uses this to write at most one
 * statement that could end a transaction behind a reset it has no answer for (ServerConnection).
 *
 * - `refused`: the suite's own BEGIN, SET and SELECT: refused there, whatever follows.
 * - `may-end`: one statement that could end the transaction: any statement of a holder sent
 *   with the extended protocol (one statement per message; its text is not read), the suite's
 *   own COMMIT or ROLLBACK.
 * - `may-end-and-continue`: a holder's simple-protocol message, which can hold several
 *   statements (`rollback; insert ...`): it waits for the reset's answer.
 */
export type UnderFailedReset = 'refused' | 'may-end' | 'may-end-and-continue'

const endsTransaction = /^\s*(COMMIT|ROLLBACK|END|ABORT|PREPARE\s+TRANSACTION)\b/i

/** The statement's text is read only for the suite's own statements (`internal`). */
export function underFailedReset(query: Pick<TrackedQuery, 'internal' | 'options' | 'strings'>): UnderFailedReset {
  if (query.internal) return endsTransaction.test(query.strings[0] ?? '') ? 'may-end' : 'refused'
  return query.options.simple === true ? 'may-end-and-continue' : 'may-end'
}

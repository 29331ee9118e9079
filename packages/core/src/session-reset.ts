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
 * - `never`: nothing but ending a transaction block left open (behind PgBouncer in transaction
 *   mode, where the server session is not ours).
 */
export type SessionReset = 'always' | 'rollback' | 'never'

/**
 * The name of the reset's last step, prepared on each connection when it opens
 * (prepareResetCheck): prepared once, it is planned once, where the same SELECT in the
 * reset's simple-protocol message was planned on every reset (16 µs of PostgreSQL CPU and 10 µs
 * of Node CPU of the 56 µs and 56 µs the reset took, measured on PostgreSQL 18 with
 * bench/reset-cost.js). A request that drops it (`DEALLOCATE ALL`, `DISCARD ALL`) makes the next
 * reset fail (26000): fail-closed, the connection is retired like after any failed reset. The
 * name ends in a random suffix (one per process): SQL cannot put a statement of its own in the
 * check's place without first reading the name back from pg_prepared_statements, which is no
 * accident but an app setting out to defeat its own pool.
 */
export const RESET_CHECK = `fastify_pg_pool_reset_${randomBytes(6).toString('hex')}`

/** When a statement was prepared, as text no DateStyle, TimeZone or locale writes differently. */
const preparedAt = (column: string) =>
  `pg_catalog.to_char(pg_catalog.timezone('UTC', ${column}), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`

/** A statement's key: its prepare time (fixed width), a space, its name. */
const keyOf = (alias: string) => `pg_catalog.concat(${preparedAt(`${alias}.prepare_time`)}, ' ', ${alias}.name)`

/**
 * The SQL-level statements a connection holds when it opens, after onConnect (its own, or what
 * a server session reused behind PgBouncer in session mode kept): the reset's check takes them
 * for the session's baseline. Each as literals quoted by the server (quote_literal writes E''
 * when it must, whatever standard_conforming_strings is): its name, and its key (keyOf).
 */
export const KEPT_STATEMENTS_SQL = `SELECT pg_catalog.quote_literal(s.name) AS name, pg_catalog.quote_literal(${keyOf('s')}) AS key
  FROM pg_catalog.pg_prepared_statements s WHERE s.from_sql`

/**
 * The schema of the dblink extension, as an identifier quoted by the server, when the database
 * has it and the session may run the functions the reset's check calls (prepareResetCheck).
 * Asked for the role onConnect left (the check is prepared as it: USAGE on the schema) and for
 * the session user (the check runs after SET SESSION AUTHORIZATION DEFAULT, as the login: a login
 * onConnect switched away from with SET SESSION AUTHORIZATION is a superuser, who may). The
 * functions are found in pg_proc by the extension's schema, not looked up by name
 * (to_regprocedure fails on a schema the role may not use, and the planner may apply it to every
 * schema before the join).
 */
export const DBLINK_SQL = `SELECT pg_catalog.quote_ident(n.nspname) AS schema
  FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
  WHERE e.extname OPERATOR(pg_catalog.=) 'dblink'
    AND pg_catalog.has_schema_privilege(current_user, n.oid, 'USAGE')
    AND pg_catalog.has_schema_privilege(session_user, n.oid, 'USAGE')
    AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p
      WHERE p.pronamespace OPERATOR(pg_catalog.=) n.oid
        AND ((p.proname OPERATOR(pg_catalog.=) 'dblink_get_connections' AND p.pronargs OPERATOR(pg_catalog.=) 0)
          OR (p.proname OPERATOR(pg_catalog.=) ANY (ARRAY['dblink_disconnect', 'dblink_is_busy', 'dblink_cancel_query']::pg_catalog.name[])
            AND p.proargtypes::pg_catalog.text OPERATOR(pg_catalog.=) '25'))
        AND pg_catalog.has_function_privilege(current_user, p.oid, 'EXECUTE')
        AND pg_catalog.has_function_privilege(session_user, p.oid, 'EXECUTE')) OPERATOR(pg_catalog.=) 4`

/** A statement of KEPT_STATEMENTS_SQL, as quoted literals. */
export interface KeptStatement {
  readonly name: string
  readonly key: string
}

// Every operator spelled OPERATOR(pg_catalog.x): an unqualified one resolves through the
// search_path the check is planned with, which after RESET ALL is the database's or the role's
// default, where a schema the app can write may come before pg_catalog. Functions and types
// qualified likewise; IS NULL, CASE, EXISTS and ::int (a keyword) cannot be replaced.
const EQ = 'OPERATOR(pg_catalog.=)'

/**
 * A seed for random() that no holder chose: 48 bits of a version 4 UUID (its first 12 hex digits,
 * all random; gen_random_uuid reads the server's strong random source), scaled into [0, 1).
 */
/** The functions STRONG_SEED and the check run: the login must be allowed to (OPEN_SQL asks). */
export const SEED_FUNCTIONS: readonly string[] = [
  'pg_catalog.setseed(pg_catalog.float8)',
  'pg_catalog.gen_random_uuid()',
  'pg_catalog.uuid_send(pg_catalog.uuid)',
  'pg_catalog.encode(pg_catalog.bytea, pg_catalog.text)',
  'pg_catalog.substr(pg_catalog.text, pg_catalog.int4, pg_catalog.int4)',
  'pg_catalog.textcat(pg_catalog.text, pg_catalog.text)',
  // The casts and the division the expression runs too.
  'pg_catalog.bit(bit, integer, boolean)',
  'pg_catalog.int8(bit)',
  'pg_catalog.float8(bigint)',
  'pg_catalog.float8div(double precision, double precision)',
]

const STRONG_SEED =
  `('x' OPERATOR(pg_catalog.||) pg_catalog.substr(pg_catalog.encode(pg_catalog.uuid_send(pg_catalog.gen_random_uuid()), 'hex'), 1, 12))` +
  '::bit(48)::pg_catalog.int8::pg_catalog.float8 OPERATOR(pg_catalog./) 281474976710656'

/**
 * The statement to prepare on a new connection (RESET_CHECK). No columns: postgres.js parses no
 * row description for them. The unlock, and seeding random() again (setseed() of a holder would
 * otherwise choose the next holder's random(); neither RESET ALL nor DISCARD touches the seed),
 * are one-time filters, evaluated once, whatever the check finds. The check reads the function,
 * not the pg_prepared_statements view (half the planning, measured), and fails on the first SQL-level statement that is neither its own nor one of
 * `kept`: 1 / 0 for such a from_sql row (CASE fixes the order: a bare AND could divide first). A
 * kept statement is known by its key (prepare time and name), so one deallocated and prepared
 * again under its name is not; the keys are one array constant, which PostgreSQL (14 and later)
 * looks up in a hash table, so the check stays linear in the statements on the connection. With
 * statements kept, it also fails when one of them is gone (a request deallocated it), so that the
 * next holder does not miss what onConnect prepared for it. Its cost grows with the statements
 * postgres.js prepared on the connection (about 0.35 µs each on PostgreSQL 18, measured): the
 * function returns them all.
 *
 * Our own name among `kept` (a server session reused behind PgBouncer in session mode, from an
 * earlier connection of this process) is deallocated first: PREPARE would refuse the name.
 * `seed` false (the login may not run SEED_FUNCTIONS: a database revoked EXECUTE on them) leaves
 * random() as the holder left it: every reset would fail otherwise.
 *
 * `dblink`: the schema of the dblink extension (quoted), when the database has it and the login
 * may run the two functions (DBLINK_SQL): the check also closes every named dblink connection a
 * holder left open (its remote session ends, rolling back a remote transaction it left open);
 * neither RESET ALL nor DISCARD ALL does, and the next holder's `dblink_connect` of that name failed
 * ("duplicate connection name"), or its `dblink(name, ...)` ran in the earlier holder's remote
 * session. One still running a statement (`dblink_send_query` whose result was not read) is
 * cancelled first: closing its socket alone leaves the remote backend running the statement, which
 * it does not read, to its end (an autocommit write then commits). dblink's unnamed connection
 * cannot be listed, so it is not closed (README).
 */
export function prepareResetCheck(kept: readonly KeptStatement[] = [], seed = true, dblink?: string): string {
  const ours = `'${RESET_CHECK}'`
  const others = kept.filter((statement) => statement.name !== ours)
  const isKept = `${keyOf('s')} ${EQ} ANY (ARRAY[${others.map((statement) => statement.key).join(', ')}]::pg_catalog.text[])`
  const disconnect =
    dblink === undefined
      ? ''
      : `(SELECT pg_catalog.count(${dblink}.dblink_disconnect(c)) FROM pg_catalog.unnest(${dblink}.dblink_get_connections()) c ` +
        `WHERE ${dblink}.dblink_is_busy(c) OPERATOR(pg_catalog.=) 0 OR ${dblink}.dblink_cancel_query(c) IS NOT NULL) IS NULL OR `
  const check =
    `SELECT WHERE ${seed ? `pg_catalog.setseed(${STRONG_SEED}) IS NULL OR ` : ''}pg_catalog.pg_advisory_unlock_all() IS NULL OR ${disconnect}EXISTS (SELECT FROM pg_catalog.pg_prepared_statement() s ` +
    `WHERE CASE WHEN s.name ${EQ} ${ours} THEN false ${others.length === 0 ? '' : `WHEN ${isKept} THEN false `}` +
    `ELSE 1 OPERATOR(pg_catalog./) (s.from_sql::int OPERATOR(pg_catalog.-) 1) ${EQ} 0 END)` +
    (others.length === 0
      ? ''
      : ` OR 1 OPERATOR(pg_catalog./) (CASE WHEN (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statement() s ` +
        `WHERE ${isKept}) ${EQ} ${others.length} THEN 1 ELSE 0 END) ${EQ} 0`)
  const deallocate = others.length === kept.length ? '' : `DEALLOCATE ${RESET_CHECK}; `
  return `${deallocate}PREPARE ${RESET_CHECK} AS ${check}`
}

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
 * function) are detected instead, by RESET_CHECK (above): it fails when there is one, and the
 * connection, which alone can drop them cheaply, is retired.
 */
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
 * Who onConnect left the session as: the session authorization it switched to and the role,
 * always stated (SET ROLE NONE too: the reset's SET SESSION AUTHORIZATION DEFAULT brings back a
 * login's default role, `ALTER ROLE ... SET role`, which onConnect may have dropped). Its
 * operators are qualified, as the check's are: it runs with the search_path onConnect left.
 */
export const CAPTURE_WHO_SQL = `SELECT session_user::pg_catalog.text AS "sessionUser",
  pg_catalog.now() OPERATOR(pg_catalog.<>) pg_catalog.statement_timestamp() AS "inBlock",
  pg_catalog.format('SET SESSION AUTHORIZATION %I', session_user) AS "setSession",
  CASE WHEN current_user OPERATOR(pg_catalog.<>) session_user THEN pg_catalog.format('SET ROLE %I', current_user)
    ELSE 'SET ROLE NONE' END AS role`

/**
 * A row of CAPTURE_WHO_SQL. `inBlock`: onConnect left a transaction block open (its start is not
 * this statement's, as it is for a statement outside a block); the pool refuses such a connection:
 * what onConnect set in it would be undone by whichever statement ends it.
 */
export interface CapturedWho {
  readonly sessionUser: string
  readonly inBlock: boolean
  readonly setSession: string
  readonly role: string
}

/**
 * The settings onConnect changed (source 'session' in pg_settings), each as the expression that
 * restores it, read as the login user (SET LOCAL SESSION AUTHORIZATION DEFAULT, in a transaction
 * rolled back): pg_settings hides superuser-only settings from the unprivileged user onConnect
 * may have switched to. Its own transaction names its isolation, like the reset's. Not captured:
 * what SET ROLE and SET SESSION AUTHORIZATION change (CAPTURE_WHO_SQL states those), and the
 * transaction_* settings, which only ever apply to one transaction (a SET TRANSACTION outside a
 * block leaves them marked 'session'; replayed inside the reset's transaction they fail with
 * 25001). Custom settings (`app.x`) are not listed by pg_settings, so they cannot be captured:
 * give those as startup parameters (`connection: { connection: { 'app.x': ... } }`), which RESET
 * ALL keeps.
 */
export const CAPTURE_SETTINGS_SQL = `SELECT name, pg_catalog.format('pg_catalog.set_config(%L, %L, false)', name, setting) AS restore
  FROM pg_catalog.pg_settings WHERE source OPERATOR(pg_catalog.=) 'session'
    AND name OPERATOR(pg_catalog.<>) ALL (ARRAY['role', 'session_authorization', 'is_superuser',
      'transaction_isolation', 'transaction_read_only', 'transaction_deferrable'])`

/**
 * Sent before CAPTURE_SETTINGS_SQL, with ROLLBACK_SQL after it, as three messages (postgres.js
 * does not hand the rows of one statement among several of a message back reliably).
 */
export const AS_LOGIN_SQL = 'BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL SESSION AUTHORIZATION DEFAULT'

/** A row of CAPTURE_SETTINGS_SQL. */
export interface CapturedSetting {
  readonly name: string
  readonly restore: string
}

/** What onConnect left on a new connection's session, as the reset restores it. */
export interface SessionBaseline {
  /**
   * For the full reset, after its SET SESSION AUTHORIZATION DEFAULT and RESET ALL: the settings
   * first (as the login user, who may set what the next user may not), then the session
   * authorization onConnect switched to (a session user changed that way is no role:
   * current_user and session_user agree), then the role.
   */
  readonly statements: string
  /** For the cheaper modes: the expression that restores one setting (by pg_settings name). */
  readonly settings: ReadonlyMap<string, string>
}

/**
 * The rows of one of the capture statements, as postgres.js's raw() gives them (a Buffer or null
 * per column, by position): read so, they are out of reach of the app's own column and value
 * transforms (`connection: { transform: postgres.camel }`, which the pool's connections share),
 * which renamed the capture's columns and made it read nothing. Anything else fails the
 * opening: a baseline read wrong must not become what every reset restores.
 */
export function textRows(raw: unknown, columns: number): string[][] {
  const shape = () => new Error('the capture of what onConnect left came back in an unexpected shape')
  if (!Array.isArray(raw)) throw shape()
  return raw.map((row: unknown) => {
    if (!Array.isArray(row) || row.length !== columns) throw shape()
    return row.map((value: unknown) => {
      if (!(value instanceof Uint8Array)) throw shape()
      return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8')
    })
  })
}

/** CAPTURE_WHO_SQL's one row; throws for an open block (ON_CONNECT_OPEN_TRANSACTION) or a bad shape. */
export function capturedWho(raw: unknown): CapturedWho {
  const [row] = textRows(raw, 4)
  const [sessionUser, inBlock, setSession, role] = row ?? []
  if (
    sessionUser === undefined ||
    setSession === undefined ||
    role === undefined ||
    (inBlock !== 't' && inBlock !== 'f')
  ) {
    throw new Error('the capture of what onConnect left came back in an unexpected shape')
  }
  return { sessionUser, inBlock: inBlock === 't', setSession, role }
}

/** Who the session is before onConnect runs: the user it logged in as. */
export const LOGIN_USER_SQL = 'SELECT session_user::pg_catalog.text AS login'

export function baselineOf(
  who: CapturedWho,
  settings: readonly CapturedSetting[],
  login: string | undefined,
): SessionBaseline {
  const restores = settings.map((setting) => setting.restore)
  const statements = [
    ...(restores.length > 0 ? [`SELECT WHERE ARRAY[${restores.join(', ')}] IS NOT NULL`] : []),
    ...(login !== undefined && who.sessionUser !== login ? [who.setSession] : []),
    who.role,
  ].join('; ')
  return { statements, settings: new Map(settings.map((setting) => [setting.name, setting.restore])) }
}

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
 * The statement to queue when a holder leaves, or undefined for none. `baseline`: what onConnect
 * left on the connection (SessionBaseline). `restores`: settings the pool itself changed on the
 * holder's session (its application_name for `leaseApplicationName`, default_transaction_read_only
 * for a read served by the primary); the full reset undoes them with everything else and restores
 * the whole baseline; the cheaper modes put back only those settings, to their baseline value or
 * their default. Only those: the cheaper modes send no SET SESSION AUTHORIZATION DEFAULT, so the
 * rest of the baseline would be replayed as whoever the session is now, which may not set it.
 */
export function resetStatement(
  mode: SessionReset,
  ranStatements: boolean,
  holderMayHaveOpened: boolean,
  baseline?: SessionBaseline,
  restores: readonly string[] = [],
  ownBlockOpen = false,
): string | undefined {
  // A block left open is ended in every mode, 'never' included, whoever opened it (the pool, for a
  // begin() the request left; the holder, as its command tags said): the next holder's statements
  // would otherwise run, uncommitted, inside it (behind PgBouncer too, where the block pins the
  // server connection to this client connection).
  const rollback = ownBlockOpen || holderMayHaveOpened
  // Nothing of the holder's ran: only what the pool itself set on the session is put back (its
  // application_name, a read-only default), in every mode; no full reset is owed.
  if (mode !== 'always' || !ranStatements) {
    const parts = [
      ...(rollback ? [ROLLBACK_SQL] : []),
      ...restores.map((setting) => {
        const restore = baseline?.settings.get(setting)
        return restore === undefined ? `RESET ${setting}` : `SELECT WHERE ARRAY[${restore}] IS NOT NULL`
      }),
    ]
    return parts.length === 0 ? undefined : parts.join('; ')
  }
  const reset = baseline === undefined ? RESET_SQL : `${RESET_UNTIL_COMMIT}; ${baseline.statements}; COMMIT`
  return rollback ? `ROLLBACK; ${reset}` : reset
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

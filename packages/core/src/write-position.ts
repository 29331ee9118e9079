import { type Lsn, parseLsn } from './lsn.js'

/**
 * Read-your-writes, the lease's side: whether a holder wrote (from the server's command tags,
 * never from SQL text), and the WAL position after its writes.
 */

/** The position a transaction's commit record is written at or before (read-your-writes). */
export const CURRENT_LSN_SQL = 'SELECT pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text AS lsn'

/**
 * The position in CURRENT_LSN_SQL's one column: read raw (its bytes, out of reach of the app's
 * parsers), or by position whatever an app's column transform named it.
 */
export function lsnOf(rows: unknown): Lsn | undefined {
  const row = (rows as unknown[] | undefined)?.[0]
  if (row === null || typeof row !== 'object') return undefined
  const values = Object.values(row)
  if (values.length !== 1) return undefined
  const value = values[0]
  return parseLsn(value instanceof Uint8Array ? Buffer.from(value).toString('utf8') : value)
}

/**
 * Command tags that do not write (or do not make a write visible): the rest are writes. Not
 * `EXPLAIN`: with ANALYZE it runs what it explains.
 */
const readTags = new Set([
  'SELECT',
  'SHOW',
  'FETCH',
  'MOVE',
  'BEGIN',
  'START TRANSACTION',
  'ROLLBACK',
  'SET',
  'RESET',
  'DECLARE CURSOR',
  'CLOSE CURSOR',
  'CLOSE CURSOR ALL',
  'PREPARE',
  'DEALLOCATE',
  'DEALLOCATE ALL',
  'SAVEPOINT',
  'RELEASE',
  'LISTEN',
  'UNLISTEN',
  'DISCARD TEMP',
  'DISCARD ALL',
])

export function isWrite(command: string): boolean {
  return command !== '' && !readTags.has(command)
}

/**
 * Whether a statement's answer shows a write: by its command tags, and by a `SELECT` tag without
 * a row description (`CREATE TABLE ... AS`, `SELECT ... INTO`: postgres.js reads NoData as no
 * columns). A zero-column `select from t` counts too: a token too many, never a read missed.
 */
export function wroteIn(value: unknown, commands: readonly string[]): boolean {
  if (commands.some(isWrite)) return true
  if (commands.length !== 1 || commands[0] !== 'SELECT') return false
  const columns = (value as { columns?: unknown }).columns
  return Array.isArray(columns) && columns.length === 0
}

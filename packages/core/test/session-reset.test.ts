import { describe, expect, test } from 'vitest'
import { commandsOf } from '../src/postgres-adapter.js'
import {
  baselineOf,
  capturedWho,
  prepareResetCheck,
  RESET_AFTER_OPEN_SQL,
  RESET_CHECK,
  RESET_SQL,
  ROLLBACK_SQL,
  resetStatement,
  TransactionState,
  textRows,
  underFailedReset,
} from '../src/session-reset.js'
import { result } from './fake-connection.js'

describe('TransactionState', () => {
  test('a transaction may be open after BEGIN, START TRANSACTION, COMMIT/ROLLBACK (AND CHAIN), SAVEPOINT, RELEASE', () => {
    for (const tag of ['BEGIN', 'START TRANSACTION', 'COMMIT', 'ROLLBACK', 'SAVEPOINT', 'RELEASE']) {
      const state = new TransactionState()
      state.noteCommands(['SELECT', tag])
      expect(state.mayBeOpen, tag).toBe(true)
    }
  })

  test('not after other statements, whatever they did to the session', () => {
    const state = new TransactionState()
    state.noteCommands(['SELECT', 'INSERT', 'SET', 'DO', 'LISTEN', 'CREATE TABLE', 'UPDATE', ''])
    expect(state.mayBeOpen).toBe(false)
  })

  test('a failure that does not say which statements ran counts as possibly open; the suite closing it clears it', () => {
    const state = new TransactionState()
    state.noteUnknown()
    expect(state.mayBeOpen).toBe(true)
    state.noteCommands(['SELECT'])
    expect(state.mayBeOpen).toBe(true)
    state.noteClosed()
    expect(state.mayBeOpen).toBe(false)
  })

  test('reads every tag of a multi-statement simple query', () => {
    const state = new TransactionState()
    state.noteCommands(commandsOf([result('SELECT'), result('BEGIN'), result('INSERT')]))
    expect(state.mayBeOpen).toBe(true)
    expect(commandsOf(result('UPDATE'))).toEqual(['UPDATE'])
    expect(commandsOf(undefined)).toEqual([])
  })
})

describe('resetStatement', () => {
  test.each([
    ['always', true, false, RESET_SQL],
    ['always', true, true, RESET_AFTER_OPEN_SQL],
    ['always', false, false, undefined],
    // No statement of the holder's, but a block of the pool's may be open (an abort inside begin()).
    ['always', false, true, ROLLBACK_SQL],
    ['rollback', true, false, undefined],
    ['rollback', true, true, ROLLBACK_SQL],
    ['rollback', false, true, ROLLBACK_SQL],
    // Round eleven: a block the holder may have left open is ended in 'never' too.
    ['never', true, true, ROLLBACK_SQL],
    ['never', true, false, undefined],
  ] as const)('%s, ran statements %s, transaction may be open %s: %s', (mode, ran, open, expected) => {
    expect(resetStatement(mode, ran, open)).toBe(expected)
  })

  test('settings the pool changed on the session (application_name, read-only) are reset in every mode', () => {
    const both = ['application_name', 'default_transaction_read_only']
    expect(resetStatement('always', true, false, undefined, both)).toBe(RESET_SQL)
    expect(resetStatement('rollback', true, false, undefined, ['application_name'])).toBe('RESET application_name')
    expect(resetStatement('rollback', true, true, undefined, both)).toBe(
      `${ROLLBACK_SQL}; RESET application_name; RESET default_transaction_read_only`,
    )
  })

  test('the cheaper modes put back only those settings, to what onConnect set when it set them', () => {
    const both = ['application_name', 'default_transaction_read_only']
    const baseline = baselineOf(
      { sessionUser: 'low', inBlock: false, setSession: 'SET SESSION AUTHORIZATION low', role: 'SET ROLE NONE' },
      [
        { name: 'application_name', restore: "pg_catalog.set_config('application_name', 'mine', false)" },
        {
          name: 'session_replication_role',
          restore: "pg_catalog.set_config('session_replication_role', 'replica', false)",
        },
      ],
      'postgres',
    )
    // Not the rest of the baseline: replayed as onConnect's user it may be refused (42501).
    expect(resetStatement('never', true, false, baseline, both)).toBe(
      "SELECT WHERE ARRAY[pg_catalog.set_config('application_name', 'mine', false)] IS NOT NULL; RESET default_transaction_read_only",
    )
    expect(resetStatement('rollback', true, false, baseline, [])).toBeUndefined()
    // A holder that ran nothing of its own (onLease refused the request) still gets them put back
    // in the default mode: the pool set them when the connection came.
    expect(resetStatement('always', false, false, baseline, both)).toBe(
      "SELECT WHERE ARRAY[pg_catalog.set_config('application_name', 'mine', false)] IS NOT NULL; RESET default_transaction_read_only",
    )
    expect(resetStatement('always', false, false, baseline, [])).toBeUndefined()
    // A block left open (the pool's own, or one the holder's tags say it may have opened) is ended
    // in every mode, 'never' included.
    expect(resetStatement('never', true, true, baseline, [], true)).toBe(ROLLBACK_SQL)
    expect(resetStatement('never', true, true, baseline, [])).toBe(ROLLBACK_SQL)
    expect(resetStatement('never', true, false, baseline, [])).toBeUndefined()
    // The full reset restores all of it, after its SET SESSION AUTHORIZATION DEFAULT.
    expect(resetStatement('always', true, false, baseline, both)).toBe(
      `${RESET_SQL.slice(0, -'; COMMIT'.length)}; ${baseline.statements}; COMMIT`,
    )
  })

  test('one message, one explicit transaction, ROLLBACK first only when a block may be open', () => {
    expect(RESET_SQL.startsWith('BEGIN ISOLATION LEVEL READ COMMITTED;')).toBe(true)
    expect(RESET_SQL.endsWith('COMMIT')).toBe(true)
    expect(RESET_AFTER_OPEN_SQL).toBe(`ROLLBACK; ${RESET_SQL}`)
    expect(RESET_SQL).not.toContain('DISCARD ALL')
    for (const part of [
      'CLOSE ALL',
      'SET SESSION AUTHORIZATION DEFAULT',
      'RESET ALL',
      'DISCARD TEMP',
      'UNLISTEN *',
      `EXECUTE ${RESET_CHECK}`,
    ]) {
      expect(RESET_SQL).toContain(part)
    }
  })

  test('the check prepared on each connection unlocks advisory locks and skips only itself', () => {
    const sql = prepareResetCheck()
    expect(sql.startsWith(`PREPARE ${RESET_CHECK} AS SELECT WHERE`)).toBe(true)
    expect(sql).toContain('pg_catalog.pg_advisory_unlock_all()')
    expect(sql).toContain(`WHEN s.name OPERATOR(pg_catalog.=) '${RESET_CHECK}' THEN false`)
    expect(sql).not.toContain('count(*)')
  })

  test('no operator of the check resolves through the search_path', () => {
    const sql = prepareResetCheck([{ name: "'app_item'", key: "'2026-12-06T12:00:00.000001Z app_item'" }])
    const bare = sql.replace(/OPERATOR\(pg_catalog\.[=/-]\)/g, '').replace(/'[^']*'/g, "''")
    expect(bare).not.toMatch(/[=/]|\s-\s/)
  })

  test('statements kept from onConnect: one array of keys (hashed by PostgreSQL), counted', () => {
    const sql = prepareResetCheck([
      { name: "'app_item'", key: "'2026-12-06T12:00:00.000001Z app_item'" },
      { name: "E'odd\\\\name'", key: "E'2026-12-06T12:00:00.000002Z odd\\\\name'" },
    ])
    expect(sql).toContain(
      "OPERATOR(pg_catalog.=) ANY (ARRAY['2026-12-06T12:00:00.000001Z app_item', E'2026-12-06T12:00:00.000002Z odd\\\\name']::pg_catalog.text[])",
    )
    // Not an OR per kept statement: that made the check quadratic (70 ms for 1000).
    expect(sql).not.toMatch(/ OR \(/)
    expect(sql).toContain(') OPERATOR(pg_catalog.=) 2 THEN 1 ELSE 0 END')
    expect(sql.startsWith('PREPARE ')).toBe(true)
  })

  test('its own name among the kept (a reused server session): deallocated first, not kept', () => {
    const sql = prepareResetCheck([{ name: `'${RESET_CHECK}'`, key: `'2026-12-06T12:00:00.000001Z ${RESET_CHECK}'` }])
    expect(sql.startsWith(`DEALLOCATE ${RESET_CHECK}; PREPARE ${RESET_CHECK} AS `)).toBe(true)
    expect(sql).not.toContain('count(*)')
  })
})

describe('baselineOf', () => {
  const who = {
    sessionUser: 'postgres',
    inBlock: false,
    setSession: 'SET SESSION AUTHORIZATION postgres',
    role: 'SET ROLE NONE',
  }
  const tokyo = { name: 'TimeZone', restore: "pg_catalog.set_config('TimeZone', 'Asia/Tokyo', false)" }

  test('the role is always stated, SET ROLE NONE included (a login default role would come back)', () => {
    expect(baselineOf(who, [], 'postgres').statements).toBe('SET ROLE NONE')
  })

  test('settings, then the session authorization onConnect switched to, then the role', () => {
    expect(baselineOf(who, [tokyo], 'postgres').statements).toBe(
      `SELECT WHERE ARRAY[${tokyo.restore}] IS NOT NULL; SET ROLE NONE`,
    )
    expect(
      baselineOf(
        { sessionUser: 'low', inBlock: false, setSession: 'SET SESSION AUTHORIZATION low', role: 'SET ROLE lower' },
        [tokyo],
        'postgres',
      ).statements,
    ).toBe(`SELECT WHERE ARRAY[${tokyo.restore}] IS NOT NULL; SET SESSION AUTHORIZATION low; SET ROLE lower`)
  })
})

describe('reading the capture (raw rows, by position)', () => {
  const raw = (...rows: (string | null)[][]) =>
    rows.map((row) => row.map((value) => (value === null ? null : Buffer.from(value))))

  test('who onConnect left, whatever names a transform would give the columns', () => {
    expect(capturedWho(raw(['low', 'f', 'SET SESSION AUTHORIZATION low', 'SET ROLE NONE']))).toEqual({
      sessionUser: 'low',
      inBlock: false,
      setSession: 'SET SESSION AUTHORIZATION low',
      role: 'SET ROLE NONE',
    })
    expect(capturedWho(raw(['low', 't', 'SET SESSION AUTHORIZATION low', 'SET ROLE NONE'])).inBlock).toBe(true)
  })

  test('any other shape fails the opening (fail closed): objects, nulls, missing rows or columns', () => {
    expect(() => capturedWho([{ SessionUser: 'low' }])).toThrow(/unexpected shape/)
    expect(() => capturedWho(raw(['low', 'f', 'SET SESSION AUTHORIZATION low']))).toThrow(/unexpected shape/)
    expect(() => capturedWho(raw(['low', null, 'x', 'y']))).toThrow(/unexpected shape/)
    expect(() => capturedWho(raw(['low', 'yes', 'x', 'y']))).toThrow(/unexpected shape/)
    expect(() => capturedWho([])).toThrow(/unexpected shape/)
    expect(() => textRows('rows', 1)).toThrow(/unexpected shape/)
    expect(textRows(raw(['a', 'b']), 2)).toEqual([['a', 'b']])
  })
})

describe('underFailedReset', () => {
  /** A statement of the suite's own (`internal`) or a holder's, simple-protocol or not. */
  const q = (internal: boolean, simple: boolean, text: string) => ({ internal, options: { simple }, strings: [text] })

  test("the suite's own COMMIT and ROLLBACK may end the aborted transaction; its BEGIN, SET and SELECT cannot", () => {
    expect(underFailedReset(q(true, true, 'COMMIT'))).toBe('may-end')
    expect(underFailedReset(q(true, true, 'COMMIT; SELECT pg_catalog.pg_current_wal_lsn()'))).toBe('may-end')
    expect(underFailedReset(q(true, true, 'ROLLBACK'))).toBe('may-end')
    expect(underFailedReset(q(true, true, 'BEGIN ISOLATION LEVEL SERIALIZABLE'))).toBe('refused')
    expect(underFailedReset(q(true, true, 'SET TRANSACTION READ ONLY'))).toBe('refused')
    expect(underFailedReset(q(true, false, "select pg_catalog.set_config('application_name', $1, false)"))).toBe(
      'refused',
    )
  })

  test("a holder's statement may end it, whatever its text; a simple-protocol message may hold more after that", () => {
    expect(underFailedReset(q(false, false, 'select 1'))).toBe('may-end')
    expect(underFailedReset(q(false, true, 'select 1'))).toBe('may-end-and-continue')
    expect(underFailedReset(q(false, true, 'rollback; insert into t values (1)'))).toBe('may-end-and-continue')
  })
})

import { unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp } from '../../../support/app.js'
import { noteTable } from '../../../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../../../support/session-probe.js'

// HELD (probe-queryapi): the migration guide says "Each query of `app.db` leases a connection, runs,
// and gives it back (reset)". On a pool of one connection, app.db's forms that leave session state
// (unsafe() of several statements with SET and set_config, an advisory lock, file() of several
// statements with a temp table and LISTEN), a cursor left early, a forEach that throws, a nested
// begin() in app.db.transaction (FST_PG_POOL_NESTED_TRANSACTION), a savepoint there, a read-only
// begin() writing (25006), a lease with a block, a savepoint and a SET, then released: each answers
// as postgres.js would, and the next request on that connection sees a clean session.

const fx = noteTable()
failOnProcessErrors()

test("app.db's forms that leave session state: each answers, the next request's session is clean", async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  addSessionProbe(app)
  app.get('/leftovers', async (request) => {
    const [row] = await request.db`
      select to_regclass('pg_temp.tt') is null as no_temp,
             (select count(*)::int from pg_listening_channels()) as channels`
    return row
  })
  await app.ready()
  const db = app.db
  const code = (promise: Promise<unknown>) =>
    promise.then(
      () => 'resolved',
      (error: { code?: string; message?: string }) => error.code ?? error.message,
    )
  const file = join(tmpdir(), `probe-queryapi-${process.pid}-${Date.now()}.sql`)
  writeFileSync(
    file,
    "set statement_timeout = 1234; select set_config('app.x', 'leak', false); select pg_advisory_lock(42); create temp table tt (x int); listen chan",
  )
  try {
    const multi = await db.unsafe("set statement_timeout = 1234; select set_config('app.x', 'leak', false) as s")
    expect(multi.at(-1)).toEqual([{ s: 'leak' }])
    expect(await db`select pg_advisory_lock(7) as l`).toEqual([{ l: '' }])
    await db.file(file)
    let first = 0
    for await (const rows of db`select generate_series(1, 100) as n`.cursor(10)) {
      first = rows.length
      break
    }
    expect(first).toBe(10)
    expect(
      await code(
        db`select generate_series(1, 10) as n`.forEach(() => {
          throw new Error('boom')
        }),
      ),
    ).toBe('boom')
    expect(await code(db.transaction(async (sql) => sql.begin(async () => 1)))).toBe('FST_PG_POOL_NESTED_TRANSACTION')
    expect(
      await db.transaction(async (sql) => {
        await sql.savepoint(async (sp) => sp`insert into note values ('sp')`)
        return 'ok'
      }),
    ).toBe('ok')
    expect(await code(db.begin('read only', async (sql) => sql`insert into note values ('ro')`))).toBe('25006')
    const lease = await db.lease()
    await lease.begin(async (sql) => {
      await sql`set local statement_timeout = 5`
      await sql.savepoint(async (sp) => sp`select 1`)
    })
    await lease`select set_config('app.x', 'leak2', false)`
    await lease.release()
    expect(await code(lease`select 1`)).toBe('FST_PG_POOL_RELEASED')
  } finally {
    unlinkSync(file)
  }
  expect(await fx.notes()).toEqual(['sp'])
  await expectCleanSession(fx.db, fx.current)
  expect((await app.inject('/leftovers')).json()).toEqual({ no_temp: true, channels: 0 })
}, 60_000)

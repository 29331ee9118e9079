// A user runs several statements in one simple-protocol message (`db.unsafe(text)` without
// values: a migration file, a setup script; the README documents such messages), on `app.db` or
// `request.db`. PostgreSQL (13 and later) applies statement_timeout to each statement of such a
// message on its own, and each of them here ends well within `statementTimeout`.
// Should get: the message's result, nothing cut. The client-side deadline (`statementTimeout` +
// 1 s) is promised for "a frozen server [that] never answers", and this server answers every
// statement in time.
// Got: the deadline counted the whole message as one statement: past `statementTimeout` + 1 s in
// all it cancelled the statement running then, closed the connection and answered 503
// FST_PG_POOL_QUERY_TIMEOUT "did not answer within 1000 ms; ... may have run and committed": a
// script that PostgreSQL itself lets run is cut in the middle (rolled back), whatever its length.
import { expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { noteTable } from '../../../support/note-table.js'

const fx = noteTable()

// statement_timeout 1 s, deadline 2 s; four statements of 0.8 s: 3.2 s in all.
const script = `insert into note values ('first');
select pg_sleep(0.8); select pg_sleep(0.8); select pg_sleep(0.8); select pg_sleep(0.8);
insert into note values ('last')`

test('a message of statements each within statementTimeout: run to its end, on request.db and app.db', async () => {
  fx.current = await coreApp(fx.db.directUrl, { max: 2, statementTimeout: 1_000 })
  const { app } = fx.current
  const closed: string[] = []
  app.pgPool.on('close', (reason: string) => void closed.push(reason))
  app.post('/script', async (request) => {
    await request.db.unsafe(script)
    return { ok: true }
  })
  await app.ready()
  const res = await app.inject({ method: 'POST', url: '/script' })
  expect(res.statusCode, res.body).toBe(200)
  expect(await fx.notes()).toEqual(['first', 'last'])
  await fx.db.sql`truncate note`
  const outcome = await app.db.unsafe(script).then(
    () => 'ran',
    (error: { code?: string; message?: string }) => `${error.code}: ${error.message}`,
  )
  expect(outcome).toBe('ran')
  expect(await fx.notes()).toEqual(['first', 'last'])
  expect(closed).not.toContain('deadline')
})

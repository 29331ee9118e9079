// HELD (probe-tx-edges, round 12):
// 1. `SET LOCAL transaction_timeout` (PostgreSQL 17+) set by the handler inside a route
//    transaction fires during a statement (the server ends the session, FATAL 25P04) or while the
//    handler waits between statements; the handler throws or swallows the error. In every
//    sessionReset mode, on a pool of one connection: never a 2xx, a coded error (503
//    CONNECTION_LOST with Retry-After, or 500 COMMIT_FAILED), nothing committed, outcome never
//    `commit`, and the next request runs on a fresh session without the setting.
// 2. A deadlock (40P01) inside `request.db.savepoint()` of a route transaction, built with a
//    second session (its deadlock_timeout made long so that the request's backend is the victim):
//    the savepoint rolls back alone, the handler goes on, COMMIT keeps the rest: 200, the outer row
//    committed, the inner one not, and the other session's work committed too.
import { describe, expect, test } from 'vitest'
import { deferred } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { sleep, waitFor } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'

const fx = noteTable()

describe('transaction_timeout set by the handler', () => {
  for (const sessionReset of ['always', 'rollback', 'never'] as const) {
    test(`${sessionReset}: never a 2xx, nothing committed, the next request clean`, async (ctx) => {
      const [server] = await fx.db.sql<{ v: number }[]>`select current_setting('server_version_num')::int as v`
      if ((server?.v ?? 0) < 170_000) ctx.skip('transaction_timeout is PostgreSQL 17+')
      fx.current = await coreApp(fx.db.directUrl, { max: 1, statementTimeout: 10_000, sessionReset })
      const { app } = fx.current
      const outcomes: string[] = []
      app.pgPool.on('transaction', (outcome: string) => void outcomes.push(outcome))
      const tx = { config: { db: { transaction: true } } } as const
      app.post('/in-statement', tx, async (request) => {
        await request.db`insert into note values ('a')`
        await request.db`set local transaction_timeout = '300ms'`
        await request.db`select pg_sleep(2)`
        return { ok: true }
      })
      app.post('/swallowed', tx, async (request) => {
        await request.db`insert into note values ('b')`
        await request.db`select set_config('transaction_timeout', '300ms', true)`
        try {
          await request.db`select pg_sleep(2)`
        } catch (error) {
          return { swallowed: (error as { code?: unknown }).code }
        }
        return { ok: true }
      })
      app.post('/between', tx, async (request) => {
        await request.db`insert into note values ('c')`
        await request.db`set local transaction_timeout = '300ms'`
        await sleep(1_000)
        return { ok: true }
      })
      app.get(
        '/next',
        async (request) =>
          (await request.db`select txid_current_if_assigned() as xid, current_setting('transaction_timeout') as t`)[0],
      )
      await app.ready()
      for (const url of ['/in-statement', '/swallowed', '/between']) {
        const res = await app.inject({ method: 'POST', url })
        expect(res.statusCode, `${url}: ${res.body}`).toBeGreaterThanOrEqual(500)
        const { code } = res.json() as { code: string }
        expect(code, url).toMatch(/^FST_PG_POOL_(CONNECTION_LOST|COMMIT_FAILED|COMMIT_UNKNOWN)$/)
        if (res.statusCode === 503) expect(res.headers['retry-after'], url).toBe('1')
        const next = await app.inject({ method: 'GET', url: '/next' })
        expect(next.statusCode, next.body).toBe(200)
        expect(next.json(), url).toEqual({ xid: null, t: '0' })
      }
      expect(await fx.notes()).toEqual([])
      expect(outcomes).toHaveLength(3)
      expect(outcomes).not.toContain('commit')
      expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
    })
  }
})

test('a deadlock inside savepoint() of a route transaction: rolled back alone, the rest commits', async () => {
  await fx.db.sql`create table if not exists acct (id int primary key, v int)`
  await fx.db.sql`truncate acct`
  await fx.db.sql`insert into acct values (1, 0), (2, 0)`
  fx.current = await coreApp(fx.db.directUrl, { max: 1, statementTimeout: 20_000 })
  const { app, applicationName } = fx.current
  const outcomes: string[] = []
  app.pgPool.on('transaction', (outcome: string) => void outcomes.push(outcome))
  const appLocked = deferred()
  const otherLocked = deferred()
  const caught: unknown[] = []
  app.post('/w', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into note values ('outer')`
    await request.db`update acct set v = v + 1 where id = 1`
    appLocked.resolve()
    await otherLocked.promise
    await request.db
      .savepoint(async (sp) => {
        await sp`insert into note values ('inner')`
        await sp`update acct set v = v + 10 where id = 2`
      })
      .catch((error: unknown) => void caught.push((error as { code?: unknown }).code))
    await request.db`insert into note values ('after')`
    return { ok: true }
  })
  await app.ready()
  const pending = app.inject({ method: 'POST', url: '/w' })
  await appLocked.promise
  const other = fx.db.sql.begin(async (tx) => {
    // The request's backend checks first (deadlock_timeout 1 s): it is the victim.
    await tx`set local deadlock_timeout = '30s'`
    await tx`update acct set v = v + 100 where id = 2`
    otherLocked.resolve()
    expect(
      await waitFor(async () => {
        const rows = await fx.db.admin<{ n: number }[]>`
          select count(*)::int as n from pg_stat_activity
          where application_name = ${applicationName} and wait_event_type = 'Lock'`
        return rows[0]?.n === 1
      }, 10_000),
    ).toBe(true)
    await tx`update acct set v = v + 100 where id = 1`
  })
  const res = await pending
  await other
  expect(caught).toEqual(['40P01'])
  expect({ status: res.statusCode, body: res.json(), outcomes }).toEqual({
    status: 200,
    body: { ok: true },
    outcomes: ['commit'],
  })
  expect(await fx.notes()).toEqual(['after', 'outer'])
  expect((await fx.db.sql<{ v: number }[]>`select v from acct order by id`).map((r) => r.v)).toEqual([101, 100])
})

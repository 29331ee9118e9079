import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { deferred, failOnProcessErrors } from '../faults/process-errors.js'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../support/database.js'

// Held attacks from hostile probing (round 8, the server acting at bad moments).
// The session reset queued behind a holder, made to block: the holder created a temp table and
// another session holds a lock on it, so the reset's DISCARD TEMP waits. Meanwhile the next
// request's first statement waits behind it on the same connection. Then the server cancels or
// terminates that backend, or statement_timeout fires, or the lock is simply released.

let db: TestDatabase
let current: TestApp | undefined
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table log (id serial primary key, note text)`
})
beforeEach(async () => {
  await db.sql`truncate log`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

type Event = 'cancel' | 'terminate' | 'timeout' | 'release'

async function blockedReset(statementTimeout = 10_000) {
  current = await coreApp(db.url, { max: 1, acquireTimeout: 8_000, statementTimeout, closeTimeout: 2_000 })
  const { app, applicationName } = current
  const created = deferred<string>()
  const gate = deferred()
  app.get('/temp', async (request) => {
    await request.db`create temp table scratch (x int)`
    const [row] = await request.db<
      { s: string }[]
    >`select nspname as s from pg_namespace where oid = pg_my_temp_schema()`
    created.resolve(row?.s ?? '')
    await gate.promise
    return { ok: true }
  })
  app.post('/insert', async (request) => {
    const [row] =
      await request.db`insert into log (note) values ('plain') returning id, txid_current_if_assigned() is not null as tx`
    return row
  })
  app.post('/insert-tx', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into log (note) values ('tx')`
    return (await request.db`select count(*)::int as n from log`)[0]
  })
  app.get(
    '/session',
    async (request) =>
      (await request.db`select to_regclass('pg_temp.scratch') is null as clean, txid_current_if_assigned() as xid`)[0],
  )
  app.get('/cursor', async (request) => {
    const rows: unknown[] = []
    for await (const batch of request.db`select generate_series(1, 10) as n`.cursor(3)) rows.push(...batch)
    return { n: rows.length }
  })
  await app.ready()
  const first = app.inject({ method: 'GET', url: '/temp' })
  const schema = await created.promise
  const lockHeld = deferred()
  const release = deferred()
  const locker = db.sql.begin(async (tx) => {
    await tx.unsafe(`lock table ${schema}.scratch in access share mode`)
    lockHeld.resolve()
    await release.promise
  })
  await lockHeld.promise
  gate.resolve()
  expect((await first).statusCode).toBe(200)
  // The reset is queued and blocked on DISCARD TEMP.
  expect(
    await waitFor(
      async () =>
        (
          await db.admin`
    select count(*)::int as n from pg_stat_activity where application_name = ${applicationName} and wait_event_type = 'Lock'`
        )[0]?.n === 1,
      3_000,
    ),
  ).toBe(true)
  return { app, applicationName, release: () => release.resolve(), locker }
}

async function fire(event: Event, applicationName: string, release: () => void) {
  if (event === 'cancel')
    await db.admin`select pg_cancel_backend(pid) from pg_stat_activity where application_name = ${applicationName} and wait_event_type = 'Lock'`
  if (event === 'terminate') await db.terminate(applicationName)
  if (event === 'release') release()
}

describe('the reset behind a holder blocks; the next request waits behind it', () => {
  for (const event of ['cancel', 'terminate', 'timeout', 'release'] as const) {
    for (const url of ['/insert', '/insert-tx'] as const) {
      test(`${event} while ${url}'s first statement waits behind the reset: 200 with one row, or a retryable 503 with none`, async () => {
        const { app, applicationName, release, locker } = await blockedReset(
          event === 'timeout' ? 700 : event === 'terminate' ? 2_000 : 10_000,
        )
        const next = app.inject({ method: 'POST', url })
        await sleep(200)
        await fire(event, applicationName, release)
        const res = await next
        release()
        await locker
        const rows = (await db.sql`select count(*)::int as n from log`)[0]?.n
        if (res.statusCode === 200) expect(rows).toBe(1)
        else {
          // A terminated backend blocked here cannot exit before the lock is released (its exit
          // drops its temp tables, which waits on the same lock): the socket stays open, so the
          // client deadline (statementTimeout + 1 s) is what ends the wait.
          expect({ status: res.statusCode, code: res.json().code, rows }).toEqual({
            status: 503,
            code:
              event === 'terminate'
                ? expect.stringMatching(/^FST_PG_POOL_(CONNECTION_LOST|QUERY_TIMEOUT)$/)
                : 'FST_PG_POOL_CONNECTION_LOST',
            rows: 0,
          })
        }
        // Per the README, a cancel or a timeout fails the reset, which retires the connection
        // and sends the statement again elsewhere: the request does not notice.
        if (event !== 'terminate') expect(res.statusCode, res.body).toBe(200)
        if (url === '/insert' && res.statusCode === 200) expect(res.json().tx).toBe(true)
        const after = await app.inject({ method: 'GET', url: '/session' })
        expect(after.statusCode, after.body).toBe(200)
        expect(after.json()).toEqual({ clean: true, xid: null })
        expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
        expect(await waitFor(async () => (await db.countConnections(applicationName)) === 1, 3_000)).toBe(true)
      })
    }
  }

  test('cancel while a cursor waits behind the reset: 200 or a retryable 503, never rows of the unreset session', async () => {
    const { app, applicationName, release, locker } = await blockedReset()
    const next = app.inject({ method: 'GET', url: '/cursor' })
    await sleep(200)
    await fire('cancel', applicationName, release)
    const res = await next
    release()
    await locker
    if (res.statusCode === 200) expect(res.json()).toEqual({ n: 10 })
    else
      expect({ status: res.statusCode, code: res.json().code }).toEqual({
        status: 503,
        code: 'FST_PG_POOL_CONNECTION_LOST',
      })
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
    const after = await app.inject({ method: 'GET', url: '/session' })
    expect(after.json()).toEqual({ clean: true, xid: null })
  })

  test('app.close() while the reset is blocked: close ends within closeTimeout, no backend of ours left', async () => {
    const { app, applicationName, release, locker } = await blockedReset()
    const next = app.inject({ method: 'POST', url: '/insert' })
    await sleep(200)
    const started = Date.now()
    const closing = app.close()
    const res = await next
    await closing
    const ms = Date.now() - started
    current = undefined
    release()
    await locker
    expect({ status: res.statusCode, code: res.json().code }).toEqual({ status: 503, code: 'FST_PG_POOL_CLOSED' })
    expect(ms).toBeLessThan(15_000)
    expect(await waitFor(async () => (await db.countConnections(applicationName)) === 0, 3_000)).toBe(true)
    expect((await db.sql`select count(*)::int as n from log`)[0]?.n).toBe(0)
  })
})

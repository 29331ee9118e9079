import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

// Found by a second round of hostile probing (the first case failed on 1c7775f): a begin() whose
// BEGIN failed left the lease 'in a block', which turned off one-statement-at-a-time, so after a
// hang-up the insert queued behind a slow statement still ran. The app.db.lease() cases held;
// they pin the queue on leased handles.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
beforeEach(async () => {
  await db.sql`truncate ledger`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

describe('one statement at a time, after a begin() that failed', () => {
  test('begin() whose BEGIN failed, then Promise.all([slow, insert]) and a hang-up: the insert never runs', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app, applicationName } = current
    app.get('/both', async (request) => {
      try {
        await request.db.begin('isolation level bogus', async (tx) => tx`select 1`)
      } catch {}
      await Promise.all([
        request.db`select pg_sleep(3)`,
        request.db`insert into ledger (note) values ('after the hang-up')`,
      ])
      return { ok: true }
    })
    const base = await listen(app)
    const client = startRequest(`${base}/both`)
    await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(3)%')) === 1, 'the sleep runs')
    client.abort()
    expect(await client.done).toBe('aborted')
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 2_000)).toBe(true)
    await waitFor(async () => (await db.running(applicationName, '%pg_sleep%')) === 0, 1_000)
    expect(await db.sql`select note from ledger`).toEqual([])
  })
})

describe('app.db.lease()', () => {
  test('Promise.all on a leased handle, then release: every statement runs in order, the pool goes idle', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    await app.ready()
    const leased = await app.db.lease()
    const results = await Promise.all([
      leased`insert into ledger (note) values ('1') returning note`,
      leased`select pg_sleep(0.05)`,
      leased`insert into ledger (note) values ('2') returning note`,
      leased`select string_agg(note, ',' order by id) as notes from ledger`,
    ])
    expect(results[3]).toEqual([{ notes: '1,2' }])
    await leased.release()
    expect(app.pgPool.stats().leased).toBe(0)
  })

  test('release() while statements are still queued: finish resolves, the pool goes idle', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    await app.ready()
    const leased = await app.db.lease()
    const all = Promise.allSettled([
      leased`select pg_sleep(0.1)`,
      leased`insert into ledger (note) values ('queued') returning note`,
    ])
    await new Promise((r) => setImmediate(r))
    const released = leased.release()
    expect(
      await Promise.race([released.then(() => 'released'), new Promise((r) => setTimeout(() => r('hung'), 3_000))]),
    ).toBe('released')
    await all
    expect(app.pgPool.stats().leased).toBe(0)
    const after = await app.db`select 1 as one`
    expect(after).toEqual([{ one: 1 }])
  })
})

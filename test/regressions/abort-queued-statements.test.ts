import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor, waitUntil } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

// Found by hostile probing (failed on 57373f9): a request's statements were all written to its
// connection at once, so after a hang-up (or handlerTimeout) the cancel stopped the one running
// and the server then ran the next: `Promise.all([slow, insert])` inserted after the client had
// gone, and a second slow statement kept running on a backend the pool had already cut, beside
// the connection that replaced it (more backends than max).

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (note text)`
})
beforeEach(async () => {
  await db.sql`truncate ledger`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

describe('statements queued behind a running one stop with the request', () => {
  test('Promise.all([slow, insert]): the client hangs up during the slow one; the insert never runs', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app, applicationName } = current
    app.get('/both', async (request) => {
      await Promise.all([request.db`select pg_sleep(3)`, request.db`insert into ledger values ('after the hang-up')`])
      return { ok: true }
    })
    app.get('/next', async (request) => request.db`select 1 as one`)
    const base = await listen(app)
    const client = startRequest(`${base}/both`)
    await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(3)%')) === 1, 'the sleep runs')
    client.abort()
    expect(await client.done).toBe('aborted')
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 2_000)).toBe(true)
    // The next request on the one connection: by then the insert would have run.
    expect((await app.inject('/next')).statusCode).toBe(200)
    expect(await db.sql`select note from ledger`).toEqual([])
  })

  test('Promise.all([slow, insert]) under handlerTimeout: the 5xx goes out and the insert never runs', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    app.post('/both', { handlerTimeout: 300 }, async (request) => {
      await Promise.all([request.db`select pg_sleep(3)`, request.db`insert into ledger values ('after the timeout')`])
      return { ok: true }
    })
    app.get('/next', async (request) => request.db`select 1 as one`)
    const res = await app.inject({ method: 'POST', url: '/both' })
    expect(res.statusCode).toBeGreaterThanOrEqual(500)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 2_000)).toBe(true)
    expect((await app.inject('/next')).statusCode).toBe(200)
    expect(await db.sql`select note from ledger`).toEqual([])
  })

  test('Promise.all([slow, slow]): after the hang-up nothing of the request runs, and no more backends than max', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app, applicationName } = current
    app.get('/two', async (request) => {
      await Promise.all([request.db`select pg_sleep(4)`, request.db`select pg_sleep(4.001)`])
      return { ok: true }
    })
    app.get('/quick', async (request) => request.db`select 1 as one`)
    const base = await listen(app)
    const client = startRequest(`${base}/two`)
    await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(4)%')) === 1, 'the sleep runs')
    client.abort()
    expect(await client.done).toBe('aborted')
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 2_000)).toBe(true)
    expect((await fetch(`${base}/quick`)).status).toBe(200)
    expect(await db.running(applicationName, '%pg_sleep%')).toBe(0)
    expect(await db.countConnections(applicationName)).toBe(1)
  })

  test('in a route transaction the statements still travel together, and a hang-up rolls them all back', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app, applicationName } = current
    app.get('/tx', { config: { db: { transaction: true } } }, async (request) => {
      await Promise.all([
        request.db`insert into ledger values ('in the transaction')`,
        request.db`select pg_sleep(3)`,
        request.db`insert into ledger values ('after the sleep')`,
      ])
      return { ok: true }
    })
    const base = await listen(app)
    const client = startRequest(`${base}/tx`)
    await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(3)%')) === 1, 'the sleep runs')
    client.abort()
    expect(await client.done).toBe('aborted')
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 2_000)).toBe(true)
    expect(await db.sql`select note from ledger`).toEqual([])
  })
})

describe('outside a transaction, a request writes one statement at a time', () => {
  test.each([
    ['waiting behind the running one', true],
    ['not yet handed to the lease (cancelled in the same tick)', false],
  ])("a statement's own cancel() while %s: it fails with FST_PG_POOL_ABORTED, never runs", async (_, later) => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    app.get('/cancel', async (request) => {
      const slow = request.db`select pg_sleep(0.2)`
      const insert = request.db`insert into ledger values ('cancelled')`
      const outcome = Promise.allSettled([slow, insert])
      if (later) await new Promise((resolve) => setImmediate(resolve))
      insert.cancel()
      const [first, second] = await outcome
      return {
        first: first.status,
        second: second.status === 'rejected' ? (second.reason as { code?: string }).code : 'ran',
      }
    })
    const res = await app.inject('/cancel')
    expect(res.json()).toEqual({ first: 'fulfilled', second: 'FST_PG_POOL_ABORTED' })
    expect(await db.sql`select note from ledger`).toEqual([])
  })

  test('Promise.all of three statements: each is sent once the one before it ended, in order; all answer', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    app.get('/three', async (request) => {
      const rows = await Promise.all([
        request.db`insert into ledger values ('1') returning note`,
        request.db`insert into ledger values ('2') returning note`,
        request.db`select string_agg(note, ',' order by note) as notes from ledger`,
      ])
      return rows.map(([row]) => row)
    })
    const res = await app.inject('/three')
    expect(res.statusCode, res.body).toBe(200)
    expect(res.json()).toEqual([{ note: '1' }, { note: '2' }, { notes: '1,2' }])
    expect(await sleep(0).then(() => app.pgPool.stats().leased)).toBe(0)
  })
})

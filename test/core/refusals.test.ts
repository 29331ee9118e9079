import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

describe('acquireTimeout and maxWaiting', () => {
  test('a request that waits past acquireTimeout gets 503 + Retry-After and leaves the queue', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 150, retryAfter: 2 })
    const { app } = current
    const acquireErrors: string[] = []
    app.pgPool.on('acquireError', (reason) => acquireErrors.push(reason))
    app.get('/hold', async (request) => request.db`select pg_sleep(0.6)`)
    app.get('/quick', async (request) => request.db`select 1 as one`)
    const hold = app.inject('/hold')
    expect(await waitFor(() => app.pgPool.stats().leased === 1)).toBe(true)
    const started = Date.now()
    const res = await app.inject('/quick')
    expect(Date.now() - started).toBeGreaterThanOrEqual(140)
    expect(res.statusCode).toBe(503)
    expect(res.headers['retry-after']).toBe('2')
    expect(res.json()).toMatchObject({
      statusCode: 503,
      code: 'FST_PG_POOL_ACQUIRE_TIMEOUT',
      message: 'Timed out after 150 ms waiting for a database connection',
    })
    expect(app.pgPool.stats().waiting).toBe(0)
    expect(acquireErrors).toEqual(['timeout'])
    expect((await hold).statusCode).toBe(200)
    // The timed-out waiter is really gone: the next request gets the connection at once.
    expect((await app.inject('/quick')).statusCode).toBe(200)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0, open: 1 })
  })

  test('past maxWaiting a request is refused at once with 503 + Retry-After', async () => {
    current = await coreApp(db.url, { max: 1, maxWaiting: 2, acquireTimeout: 5_000 })
    const { app } = current
    app.get('/hold', async (request) => request.db`select pg_sleep(0.4)`)
    const first = app.inject('/hold')
    expect(await waitFor(() => app.pgPool.stats().leased === 1)).toBe(true)
    const queued = [app.inject('/hold'), app.inject('/hold')]
    expect(await waitFor(() => app.pgPool.stats().waiting === 2)).toBe(true)
    const started = Date.now()
    const refused = await app.inject('/hold')
    expect(Date.now() - started).toBeLessThan(100)
    expect(refused.statusCode).toBe(503)
    expect(refused.headers['retry-after']).toBe('1')
    expect(refused.json()).toMatchObject({ code: 'FST_PG_POOL_QUEUE_FULL' })
    expect(app.pgPool.stats().waiting).toBe(2)
    const statuses = (await Promise.all([first, ...queued])).map((r) => r.statusCode)
    expect(statuses).toEqual([200, 200, 200])
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
  })

  test('maxWaiting 0: no queue; requests get the connections the pool can still open, then 503 at once', async () => {
    current = await coreApp(db.url, { max: 3, maxWaiting: 0, acquireTimeout: 5_000 })
    const { app, applicationName } = current
    app.get('/hold', async (request) => request.db`select pg_sleep(0.4)`)
    app.get('/quick', async (request) => request.db`select 1 as one`)
    // register's warm-up opened one connection; the other two are opened for these requests.
    expect(app.pgPool.stats()).toMatchObject({ open: 1, idle: 1, maxWaiting: 0, waitingCap: 3 })
    const held = [app.inject('/hold'), app.inject('/hold'), app.inject('/hold')]
    expect(await waitFor(() => app.pgPool.stats().leased === 3)).toBe(true)
    expect(app.pgPool.stats().waitingCap).toBe(0)
    // Leased is counted before the statements reach the server (through PgBouncer, a moment later).
    expect(await waitFor(async () => (await db.running(applicationName, '%pg_sleep%')) === 3)).toBe(true)
    const started = Date.now()
    const refused = await Promise.all([app.inject('/quick'), app.inject('/quick')])
    expect(Date.now() - started).toBeLessThan(100)
    for (const res of refused) {
      expect(res.statusCode).toBe(503)
      expect(res.headers['retry-after']).toBe('1')
      expect(res.json()).toMatchObject({ code: 'FST_PG_POOL_QUEUE_FULL' })
    }
    expect(app.pgPool.stats()).toMatchObject({ leased: 3, waiting: 0 })
    expect((await Promise.all(held)).map((r) => r.statusCode)).toEqual([200, 200, 200])
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect((await app.inject('/quick')).statusCode).toBe(200)
    expect(await db.countConnections(applicationName)).toBe(3)
  })

  test('a lazy pool with maxWaiting below max serves a burst of max requests: they wait for connections being opened', async () => {
    current = await coreApp(db.url, { max: 4, maxWaiting: 1, lazy: true, acquireTimeout: 5_000 })
    const { app, applicationName } = current
    app.get('/hold', async (request) => request.db`select pg_sleep(0.2)`)
    expect(app.pgPool.stats()).toMatchObject({ open: 0 })
    const burst = Array.from({ length: 4 }, () => app.inject('/hold'))
    expect(await waitFor(() => app.pgPool.stats().waiting === 4, 5_000, 1)).toBe(true)
    expect(app.pgPool.stats()).toMatchObject({ connecting: 4 })
    // Every connection the pool may open is taken by a waiter: a fifth request would wait
    // behind another request's, and one such waiter (maxWaiting) is already there.
    const fifth = await app.inject('/hold')
    expect(fifth.statusCode).toBe(503)
    expect(fifth.json()).toMatchObject({ code: 'FST_PG_POOL_QUEUE_FULL' })
    expect((await Promise.all(burst)).map((r) => r.statusCode)).toEqual([200, 200, 200, 200])
    expect(await db.countConnections(applicationName)).toBe(4)
  })

  test('stats report the oldest wait while requests queue', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    const lease = await app.db.lease()
    const waiting = app.db`select 1`.execute()
    await new Promise((resolve) => setTimeout(resolve, 120))
    const stats = app.pgPool.stats()
    expect(stats).toMatchObject({ max: 1, open: 1, idle: 0, leased: 1, waiting: 1 })
    expect(stats.oldestWaitMs).toBeGreaterThanOrEqual(100)
    await lease.release()
    await waiting
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0, oldestWaitMs: 0, idle: 1 })
  })

  test('use of a released manual lease throws a coded error; release is idempotent', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    const lease = await app.db.lease()
    await lease`select 1`
    await Promise.all([lease.release(), lease.release()])
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, idle: 1 })
    await expect(lease`select 1`).rejects.toMatchObject({ code: 'FST_PG_POOL_RELEASED' })
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, idle: 1 })
  })
})

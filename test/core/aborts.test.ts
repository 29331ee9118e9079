import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

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

describe('client aborts and handler timeouts', () => {
  test('100 clients hanging up mid-query leave no lease and no running query behind', async () => {
    current = await coreApp(db.url, { max: 10, maxWaiting: 200, acquireTimeout: 20_000 })
    const { app, applicationName } = current
    app.get('/sleep', async (request) => request.db`select pg_sleep(20)`)
    app.get('/quick', async (request) => request.db`select 1 as one`)
    const base = await listen(app)

    const clients = Array.from({ length: 100 }, () => startRequest(`${base}/sleep`))
    expect(await waitFor(async () => (await db.running(applicationName, '%pg_sleep(20)%')) === 10, 10_000)).toBe(true)
    expect(await waitFor(() => app.pgPool.stats().waiting === 90, 5_000)).toBe(true)
    for (const client of clients) client.abort()
    expect((await Promise.all(clients.map((c) => c.done))).every((r) => r === 'aborted')).toBe(true)

    expect(await waitFor(() => app.pgPool.stats().leased === 0 && app.pgPool.stats().waiting === 0, 5_000)).toBe(true)
    expect(await db.running(applicationName, '%pg_sleep%')).toBe(0)

    const started = Date.now()
    const statuses = await Promise.all(Array.from({ length: 20 }, () => fetch(`${base}/quick`).then((r) => r.status)))
    expect(Date.now() - started).toBeLessThan(1_000)
    expect(statuses).toEqual(Array(20).fill(200))
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
    expect(app.pgPool.stats().open).toBeLessThanOrEqual(10)
  })

  test('a client that leaves while waiting for a connection leaves the queue at once', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 20_000 })
    const { app } = current
    app.get('/sleep', async (request) => request.db`select pg_sleep(0.5)`)
    const base = await listen(app)
    const holder = startRequest(`${base}/sleep`)
    expect(await waitFor(() => app.pgPool.stats().leased === 1)).toBe(true)
    const waiter = startRequest(`${base}/sleep`)
    expect(await waitFor(() => app.pgPool.stats().waiting === 1)).toBe(true)
    waiter.abort()
    expect(await waitFor(() => app.pgPool.stats().waiting === 0, 2_000)).toBe(true)
    expect(app.pgPool.stats().leased).toBe(1)
    expect(await holder.done).toBe(200)
  })

  test('handlerTimeout: the lease comes back only after the handler query settled, never to two holders', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app, applicationName } = current
    const events: string[] = []
    app.pgPool.on('release', (_held, route) => events.push(`release ${route}`))
    let lateQuery: unknown
    app.get('/slow', { handlerTimeout: 150 }, async (request) => {
      try {
        await request.db`select pg_sleep(0.6)`
        events.push('slow query resolved')
      } catch (error) {
        events.push(`slow query failed ${(error as { code?: string }).code}`)
      }
      lateQuery = await request.db`select 1`.catch((error: { code?: string }) => error.code)
      return 'late'
    })
    app.get('/pid', async (request) => {
      const [row] = await request.db`select count(*)::int as n from pg_stat_activity
        where application_name = ${applicationName} and query like '%pg_sleep(0.6)%' and state = 'active' and pid <> pg_backend_pid()`
      events.push('second request queried')
      return row
    })
    const base = await listen(app)
    const slow = fetch(`${base}/slow`)
    expect(await waitFor(() => app.pgPool.stats().leased === 1)).toBe(true)
    const second = fetch(`${base}/pid`)
    const slowResponse = await slow
    expect(slowResponse.status).toBe(503)
    expect(((await slowResponse.json()) as { code: string }).code).toBe('FST_ERR_HANDLER_TIMEOUT')
    expect(await (await second).json()).toEqual({ n: 0 })
    expect(await waitFor(() => lateQuery !== undefined)).toBe(true)
    // The timed-out request's query was cancelled and had settled on the server ({ n: 0 }
    // above) before its lease went back; only then did the second request get the connection.
    expect(events).toContain('slow query failed FST_PG_POOL_ABORTED')
    expect(events.indexOf('release /slow')).toBeLessThan(events.indexOf('second request queried'))
    // A statement after the handlerTimeout: ABORTED, as the README says (RELEASED until round ten).
    expect(lateQuery).toBe('FST_PG_POOL_ABORTED')
    expect(app.pgPool.stats().leased).toBe(0)
  })

  test('a query after the response is refused with a coded error', async () => {
    current = await coreApp(db.url, { max: 2 })
    const { app } = current
    let kept: typeof app.db | undefined
    app.get('/keep', async (request) => {
      await request.db`select 1`
      kept = request.db as unknown as typeof app.db
      return 'ok'
    })
    expect((await app.inject('/keep')).statusCode).toBe(200)
    await waitFor(() => app.pgPool.stats().leased === 0)
    await expect((kept as typeof app.db)`select 1`).rejects.toMatchObject({
      code: 'FST_PG_POOL_RELEASED',
      statusCode: 500,
    })
    expect(app.pgPool.stats().leased).toBe(0)
  })
})

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

describe('lease pool', () => {
  test('200 concurrent requests with max 5 never open more than 5 server connections', async () => {
    current = await coreApp(db.url, { max: 5, maxWaiting: 500 })
    const { app, applicationName } = current
    app.get('/work', async (request) => {
      const [row] = await request.db`select pg_sleep(0.01), ${request.id}::text as id`
      return row
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const address = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
    let peak = 0
    let peakLeased = 0
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, await db.countConnections(applicationName))
        peakLeased = Math.max(peakLeased, app.pgPool.stats().leased)
      }
    })()
    const responses = await Promise.all(Array.from({ length: 200 }, () => fetch(`${address}/work`)))
    sampling = false
    await sampler
    expect(responses.map((r) => r.status)).toEqual(Array(200).fill(200))
    expect(peak).toBeGreaterThan(1)
    expect(peak).toBeLessThanOrEqual(5)
    expect(peakLeased).toBe(5)
    expect(app.pgPool.stats()).toMatchObject({ max: 5, leased: 0, waiting: 0, idle: 5, open: 5 })
  })

  test('a route that never queries takes no connection', async () => {
    current = await coreApp(db.url, { max: 3, lazy: true })
    const { app, applicationName } = current
    app.get('/static', async () => ({ ok: true }))
    app.get('/touches-db-handle', async (request) => {
      void request.db // creating the handle is not leasing
      return { ok: true }
    })
    for (let i = 0; i < 20; i++) {
      expect((await app.inject('/static')).statusCode).toBe(200)
      expect((await app.inject('/touches-db-handle')).statusCode).toBe(200)
      expect((await app.inject('/nope')).statusCode).toBe(404)
    }
    expect(app.pgPool.stats()).toMatchObject({ open: 0, leased: 0 })
    expect(await db.countConnections(applicationName)).toBe(0)
  })

  test('the first query of a request leases; its connection goes back after the response', async () => {
    current = await coreApp(db.url, { max: 2 })
    const { app } = current
    const pids: number[] = []
    app.get('/twice', async (request) => {
      const [a] = await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`
      const [b] = await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`
      pids.push(a?.pid ?? 0, b?.pid ?? 0)
      return { leased: app.pgPool.stats().leased }
    })
    expect((await app.inject('/twice')).json()).toEqual({ leased: 1 })
    expect(pids[0]).toBe(pids[1])
    expect(app.pgPool.stats().leased).toBe(0)
  })

  test('under contention every query of a request still runs on its one connection (currval works)', async () => {
    await db.sql`create table if not exists ticket (id serial primary key, who int not null)`
    current = await coreApp(db.url, { max: 2 })
    const { app } = current
    app.post('/tickets/:who', async (request) => {
      const who = Number((request.params as { who: string }).who)
      const [first] = await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`
      await request.db`insert into ticket (who) values (${who})`
      await new Promise((resolve) => setTimeout(resolve, 2))
      const [row] = await request.db<{ id: number; pid: number }[]>`
        select currval('ticket_id_seq')::int as id, pg_backend_pid() as pid`
      return { id: row?.id, samePid: row?.pid === first?.pid }
    })
    const replies = await Promise.all(
      Array.from({ length: 20 }, (_, who) => app.inject({ method: 'POST', url: `/tickets/${who}` })),
    )
    const rows = await db.sql<{ id: number; who: number }[]>`select id, who from ticket`
    const owner = new Map(rows.map((r) => [r.id, r.who]))
    replies.forEach((reply, who) => {
      expect(reply.statusCode).toBe(200)
      const body = reply.json() as { id: number; samePid: boolean }
      expect(body.samePid).toBe(true)
      expect(owner.get(body.id)).toBe(who)
    })
  })

  test('waiters are served first come, first served', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    const order: number[] = []
    const hold = await app.db.lease()
    const waits = [1, 2, 3, 4].map((n) =>
      app.db`select ${n}::int as n`.then(([row]) => {
        order.push(row?.n as number)
      }),
    )
    expect(await waitFor(() => app.pgPool.stats().waiting === 4)).toBe(true)
    await hold.release()
    await Promise.all(waits)
    expect(order).toEqual([1, 2, 3, 4])
  })

  test('max given as a string in the URL becomes a number', async () => {
    const url = new URL(db.url)
    url.searchParams.set('max', '3')
    current = await coreApp(url.toString(), { lazy: true })
    const { app, applicationName } = current
    app.get('/hold', async (request) => request.db`select pg_sleep(0.2)`)
    await Promise.all(Array.from({ length: 6 }, () => app.inject('/hold')))
    expect(app.pgPool.stats()).toMatchObject({ max: 3, open: 3 })
    expect(await db.countConnections(applicationName)).toBe(3)
  })

  test('idle connections close after idleTimeout', async () => {
    current = await coreApp(db.url, { max: 3, idleTimeout: 200 })
    const { app, applicationName } = current
    await Promise.all([app.db`select pg_sleep(0.05)`, app.db`select pg_sleep(0.05)`, app.db`select 1`])
    expect(app.pgPool.stats().open).toBeGreaterThanOrEqual(2)
    expect(await waitFor(() => app.pgPool.stats().open === 0, 3_000)).toBe(true)
    expect(await waitFor(async () => (await db.countConnections(applicationName)) === 0, 3_000)).toBe(true)
  })

  test('connections are retired after maxLifetime and replaced on demand', async () => {
    current = await coreApp(db.url, { max: 1, maxLifetime: 300, idleTimeout: 0 })
    const { app } = current
    const [first] = await app.db<{ pid: number }[]>`select pg_backend_pid() as pid`
    await new Promise((resolve) => setTimeout(resolve, 700))
    const [second] = await app.db<{ pid: number }[]>`select pg_backend_pid() as pid`
    expect(second?.pid).not.toBe(first?.pid)
  })

  test('app.close() ends every connection, even with a hung query', async () => {
    current = await coreApp(db.url, { max: 2, closeTimeout: 300 })
    const { app, applicationName } = current
    const hung = app.db`select pg_sleep(30)`.catch((error: Error) => error)
    expect(await waitFor(async () => (await db.running(applicationName, '%pg_sleep(30)%')) === 1)).toBe(true)
    const started = Date.now()
    await app.close()
    current = undefined
    expect(Date.now() - started).toBeLessThan(3_000)
    expect(await hung).toBeInstanceOf(Error)
    expect(await waitFor(async () => (await db.countConnections(applicationName)) === 0)).toBe(true)
  })
})

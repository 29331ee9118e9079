import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'
import { deferred, failOnProcessErrors, fastTimeouts } from './process-errors.js'

let db: TestDatabase
let current: TestApp | undefined
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

async function backendPids(applicationName: string): Promise<number[]> {
  const rows = await db.admin<{ pid: number }[]>`
    select pid from pg_stat_activity where application_name = ${applicationName} order by pid`
  return rows.map((row) => row.pid)
}

describe('backend terminated', () => {
  test('while leased and idle: the next query fails with a coded 503, the connection is replaced', async () => {
    current = await coreApp(db.url, { max: 1, ...fastTimeouts })
    const { app, applicationName } = current
    const firstQueryDone = deferred<number>()
    const terminated = deferred()
    app.get('/idle-then-query', async (request) => {
      const [first] = await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`
      firstQueryDone.resolve(first?.pid ?? 0)
      await terminated.promise
      const [second] = await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`
      return second
    })
    app.get('/pid', async (request) => (await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`)[0])
    const base = await listen(app)

    const response = fetch(`${base}/idle-then-query`)
    const pid = await firstQueryDone.promise
    expect(await backendPids(applicationName)).toEqual([pid])
    const [killed] = await db.admin<{ ok: boolean }[]>`select pg_terminate_backend(${pid}) as ok`
    expect(killed?.ok).toBe(true)
    expect(await waitFor(async () => (await backendPids(applicationName)).length === 0)).toBe(true)
    terminated.resolve()

    const failed = await response
    expect(failed.status).toBe(503)
    expect(failed.headers.get('retry-after')).toBe('1')
    expect(await failed.json()).toMatchObject({ statusCode: 503, code: 'FST_PG_POOL_CONNECTION_LOST' })
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, idle: 0, open: 0 })

    const next = await fetch(`${base}/pid`)
    expect(next.status).toBe(200)
    const { pid: freshPid } = (await next.json()) as { pid: number }
    expect(freshPid).not.toBe(pid)
    expect(await backendPids(applicationName)).toEqual([freshPid])
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, idle: 1, open: 1 })
  })

  test('while leased and idle, queried the instant the kill is sent: still a coded 503, never a crash', async () => {
    current = await coreApp(db.url, { max: 1, ...fastTimeouts })
    const { app, applicationName } = current
    app.get('/kill-then-query', async (request) => {
      const [first] = await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`
      await db.admin`select pg_terminate_backend(${first?.pid ?? 0})`
      return (await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]
    })
    app.get('/pid', async (request) => (await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`)[0])
    const base = await listen(app)
    for (let i = 0; i < 5; i++) {
      const failed = await fetch(`${base}/kill-then-query`)
      const body = (await failed.json()) as { code: string; message: string }
      // The query either reached the dying backend (57P01) or found the socket closed.
      expect({ status: failed.status, code: body.code }).toEqual({ status: 503, code: 'FST_PG_POOL_CONNECTION_LOST' })
      const next = await fetch(`${base}/pid`)
      expect(next.status).toBe(200)
      const { pid } = (await next.json()) as { pid: number }
      expect(await backendPids(applicationName)).toEqual([pid])
    }
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, open: 1 })
  })

  test('while idle in the pool: the dead connection is never handed to a request', async () => {
    current = await coreApp(db.url, { max: 2, idleTimeout: 0, ...fastTimeouts })
    const { app, applicationName } = current
    app.get('/pid', async (request) => (await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`)[0])
    app.get('/two', async (request) => {
      await request.db`select pg_sleep(0.05)`
      return { ok: true }
    })
    const base = await listen(app)
    await Promise.all([fetch(`${base}/two`), fetch(`${base}/two`)])
    // A lease comes back once its reply is on its way: on a loaded machine a moment after the client has it.
    expect(await waitFor(() => app.pgPool.stats().idle === 2)).toBe(true)
    expect(app.pgPool.stats()).toMatchObject({ open: 2, idle: 2 })
    const before = await backendPids(applicationName)
    expect(await db.terminate(applicationName)).toBe(2)
    expect(await waitFor(async () => (await backendPids(applicationName)).length === 0)).toBe(true)
    // The client learns of the close a moment after the server forgets the backend (a query sent
    // in that moment fails with a coded 503, as tested above). Well before any
    // housekeeping pass (500 ms here), both requests must land on fresh connections.
    await sleep(50)
    const responses = await Promise.all([fetch(`${base}/pid`), fetch(`${base}/pid`)])
    const bodies = await Promise.all(responses.map((r) => r.json() as Promise<{ pid?: number; code?: string }>))
    expect(responses.map((r) => r.status)).toEqual([200, 200])
    for (const body of bodies) expect(before).not.toContain(body.pid)
  })

  test('in a route transaction before COMMIT: the client gets a 5xx, never success, and no row', async () => {
    await db.sql`create table if not exists writes (id int primary key)`
    current = await coreApp(db.url, { max: 1, ...fastTimeouts })
    const { app } = current
    const inserted = deferred<number>()
    const terminated = deferred()
    app.post('/write', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into writes values (1)`
      const [me] = await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`
      inserted.resolve(me?.pid ?? 0)
      await terminated.promise
      return { ok: true }
    })
    const response = app.inject({ method: 'POST', url: '/write' })
    const pid = await inserted.promise
    await db.admin`select pg_terminate_backend(${pid})`
    expect(await waitFor(async () => !(await backendPids(current?.applicationName ?? '')).includes(pid))).toBe(true)
    terminated.resolve()
    const failed = await response
    expect(failed.statusCode).toBeGreaterThanOrEqual(500)
    // The client may not have read the server's goodbye before it sent COMMIT: then it cannot
    // tell whether the server saw the COMMIT, and says so (COMMIT_UNKNOWN), never success.
    expect(failed.json()).toMatchObject({
      code: expect.stringMatching(/^FST_PG_POOL_(COMMIT_FAILED|COMMIT_UNKNOWN|CONNECTION_LOST)$/),
    })
    expect(await db.sql`select * from writes`).toEqual([])
  })

  test('mid-query: that request fails cleanly; no later request sees a stale error', async () => {
    current = await coreApp(db.url, {
      max: 1,
      maxWaiting: 50,
      ...fastTimeouts,
      statementTimeout: 5_000,
      acquireTimeout: 3_000,
    })
    const { app, applicationName } = current
    app.get('/sleep', async (request) => request.db`select pg_sleep(4)`)
    app.get('/pid', async (request) => (await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`)[0])
    const base = await listen(app)
    const [before] = await backendPids(applicationName)

    const sleeping = fetch(`${base}/sleep`)
    expect(await waitFor(async () => (await db.running(applicationName, '%pg_sleep(4)%')) === 1)).toBe(true)
    // Queued behind the sleeping request on the only connection: it must get a fresh one,
    // not the dead slot's leftover 57P01.
    const queued = fetch(`${base}/pid`)
    expect(await waitFor(() => app.pgPool.stats().waiting === 1)).toBe(true)
    expect(await db.terminate(applicationName)).toBe(1)

    const failed = await sleeping
    expect(failed.status).toBe(503)
    expect(await failed.json()).toMatchObject({ code: 'FST_PG_POOL_CONNECTION_LOST' })
    const next = await queued
    expect(next.status).toBe(200)
    const { pid: freshPid } = (await next.json()) as { pid: number }
    expect(freshPid).not.toBe(before)

    const later = await Promise.all(Array.from({ length: 20 }, () => fetch(`${base}/pid`)))
    const bodies = await Promise.all(later.map((r) => r.text()))
    expect(bodies.join('\n')).not.toContain('57P01')
    expect(later.map((r) => r.status)).toEqual(Array(20).fill(200))
    expect(new Set(bodies.map((body) => (JSON.parse(body) as { pid: number }).pid))).toEqual(new Set([freshPid]))
    expect(await backendPids(applicationName)).toEqual([freshPid])
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, idle: 1, open: 1 })
  })

  test('every connection of a busy pool terminated at once: the pool refills and serves', async () => {
    current = await coreApp(db.url, { max: 4, maxWaiting: 100, ...fastTimeouts, acquireTimeout: 2_000 })
    const { app, applicationName } = current
    app.get('/sleep', async (request) => request.db`select pg_sleep(0.5)`)
    app.get('/pid', async (request) => (await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`)[0])
    const base = await listen(app)
    const busy = Array.from({ length: 4 }, () => fetch(`${base}/sleep`))
    expect(await waitFor(async () => (await db.running(applicationName, '%pg_sleep(0.5)%')) === 4)).toBe(true)
    expect(await db.terminate(applicationName)).toBe(4)
    const statuses = (await Promise.all(busy)).map((r) => r.status)
    expect(statuses).toEqual([503, 503, 503, 503])
    const after = await Promise.all(Array.from({ length: 40 }, () => fetch(`${base}/pid`)))
    expect(after.map((r) => r.status)).toEqual(Array(40).fill(200))
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
  })
})

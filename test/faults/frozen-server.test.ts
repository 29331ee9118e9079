import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { failOnProcessErrors, fastTimeouts } from './process-errors.js'

let db: TestDatabase
let proxy: TcpProxy
let current: TestApp | undefined
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
})
beforeEach(async () => {
  proxy = await startTcpProxy(Number(new URL(db.url).port))
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
  await proxy.close()
})
afterAll(() => db.drop())

interface Outcome {
  readonly ms: number
  readonly status: number
  readonly code: string | undefined
}

async function timed(url: string): Promise<Outcome> {
  const started = Date.now()
  const response = await fetch(url)
  const body = (await response.json()) as { code?: string }
  return { ms: Date.now() - started, status: response.status, code: body.code }
}

/** Client-side deadline: statementTimeout + 1 s grace, found by a sweep every 500 ms here. */
const deadline = fastTimeouts.statementTimeout + 1_000 + 500

describe('frozen server (TCP proxy)', () => {
  test('black hole: requests fail by their deadline, no lease stays stuck, traffic recovers on pass', async () => {
    current = await coreApp(proxy.urlFor(db.url), { max: 2, maxWaiting: 20, idleTimeout: 0, ...fastTimeouts })
    const { app, applicationName } = current
    app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
    app.get('/warm', async (request) => request.db`select pg_sleep(0.05)`)
    const base = await listen(app)
    await Promise.all([fetch(`${base}/warm`), fetch(`${base}/warm`)])
    expect(app.pgPool.stats()).toMatchObject({ open: 2, idle: 2 })

    proxy.setMode('blackhole')
    // Two take the frozen connections; two more queue behind them and time out waiting.
    const frozen = await Promise.all(Array.from({ length: 4 }, () => timed(`${base}/one`)))
    console.log(`[fault:blackhole] settle times ${frozen.map((o) => `${o.ms} ms ${o.status} ${o.code}`).join('; ')}`)
    const codes = frozen.map((o) => o.code).sort()
    expect(codes).toEqual([
      'FST_PG_POOL_ACQUIRE_TIMEOUT',
      'FST_PG_POOL_ACQUIRE_TIMEOUT',
      'FST_PG_POOL_QUERY_TIMEOUT',
      'FST_PG_POOL_QUERY_TIMEOUT',
    ])
    for (const o of frozen) {
      expect(o.status).toBe(503)
      expect(o.ms).toBeLessThan(deadline + 500)
    }
    for (const o of frozen.filter((o) => o.code === 'FST_PG_POOL_QUERY_TIMEOUT')) {
      expect(o.ms).toBeGreaterThanOrEqual(fastTimeouts.statementTimeout)
    }
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })

    // New connections cannot get through either: refused after connectTimeout, never hung.
    const connecting = await timed(`${base}/one`)
    expect(connecting.status).toBe(503)
    expect(connecting.ms).toBeLessThan(fastTimeouts.connectTimeout + fastTimeouts.acquireTimeout + 300)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })

    proxy.setMode('pass')
    const recoveredAt = Date.now()
    expect(await waitFor(async () => (await fetch(`${base}/one`)).status === 200, 3_000)).toBe(true)
    console.log(`[fault:blackhole] first 200 ${Date.now() - recoveredAt} ms after the proxy passed again`)
    const after = await Promise.all(Array.from({ length: 10 }, () => timed(`${base}/one`)))
    expect(after.map((o) => o.status)).toEqual(Array(10).fill(200))
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
    // The frozen connections were cut, so the server let go of their backends.
    expect(await waitFor(async () => (await db.countConnections(applicationName)) === app.pgPool.stats().open)).toBe(
      true,
    )
  })

  test('black hole under pipelined requests: every request sharing a frozen connection fails by the deadline, then recovery', async () => {
    current = await coreApp(proxy.urlFor(db.url), { max: 1, maxWaiting: 20, idleTimeout: 0, ...fastTimeouts })
    const { app } = current
    app.get('/one', { config: { db: { pipeline: true } } }, async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    expect((await timed(`${base}/one`)).status).toBe(200)

    proxy.setMode('blackhole')
    // Five share the one frozen connection, their statements queued on it.
    const requests = Array.from({ length: 5 }, () => timed(`${base}/one`))
    expect(await waitFor(() => app.pgPool.stats().pipelined === 5)).toBe(true)
    const frozen = await Promise.all(requests)
    console.log(`[fault:blackhole-pipelined] settle times ${frozen.map((o) => `${o.ms} ms ${o.code}`).join('; ')}`)
    for (const o of frozen) {
      expect(o.status).toBe(503)
      expect(o.code).toBe('FST_PG_POOL_QUERY_TIMEOUT')
      expect(o.ms).toBeGreaterThanOrEqual(fastTimeouts.statementTimeout)
      expect(o.ms).toBeLessThan(deadline + 500)
    }
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, pipelined: 0, sharedQueries: 0, waiting: 0 })

    proxy.setMode('pass')
    expect(await waitFor(async () => (await fetch(`${base}/one`)).status === 200, 3_000)).toBe(true)
    const after = await Promise.all(Array.from({ length: 10 }, () => timed(`${base}/one`)))
    expect(after.map((o) => o.status)).toEqual(Array(10).fill(200))
  })

  test('app.close() while the server is frozen mid-query completes within closeTimeout + the cancel grace', async () => {
    const closeTimeout = 300
    // No statement deadline: only close() can end the frozen query.
    current = await coreApp(proxy.urlFor(db.url), { max: 1, ...fastTimeouts, statementTimeout: 0, closeTimeout })
    const { app } = current
    expect(await app.db`select 1 as one`).toEqual([{ one: 1 }])
    proxy.setMode('blackhole')
    const frozen = app.db`select 2 as two`.catch((error: Error) => error)
    expect(await waitFor(() => app.pgPool.stats().leased === 1)).toBe(true)
    const started = Date.now()
    await app.close()
    current = undefined
    const closeMs = Date.now() - started
    console.log(`[fault:blackhole] app.close() with a frozen query took ${closeMs} ms (closeTimeout ${closeTimeout})`)
    // closeTimeout, then up to 1 s for a cancel that cannot get through, then the cut.
    expect(closeMs).toBeLessThan(closeTimeout + 1_000 + 500)
    expect(await frozen).toBeInstanceOf(Error)
    const closedAt = Date.now()
    expect(await waitFor(() => proxy.open === 0, 5_000)).toBe(true)
    console.log(`[fault:blackhole] last socket through the proxy closed ${Date.now() - closedAt} ms after close()`)
  })

  test('delay: slow but answering traffic is served, not cut', async () => {
    current = await coreApp(proxy.urlFor(db.url), { max: 2, ...fastTimeouts })
    const { app } = current
    app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    proxy.setMode('delay', 150)
    const slow = await timed(`${base}/one`)
    expect(slow.status).toBe(200)
    // One round trip both ways: at least 300 ms.
    expect(slow.ms).toBeGreaterThanOrEqual(300)
    proxy.setMode('pass')
  })

  test('reset: open connections and new ones are reset; coded 503s, then recovery on pass', async () => {
    current = await coreApp(proxy.urlFor(db.url), { max: 2, idleTimeout: 0, ...fastTimeouts })
    const { app } = current
    const held = { pid: 0 }
    app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
    app.get('/sleep', async (request) => {
      held.pid = (await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]?.pid ?? 0
      return request.db`select pg_sleep(0.5)`
    })
    const base = await listen(app)
    const sleeping = timed(`${base}/sleep`)
    expect(await waitFor(() => held.pid !== 0)).toBe(true)
    const acceptedBefore = proxy.accepted
    proxy.setMode('reset')
    const midQuery = await sleeping
    expect(midQuery).toMatchObject({ status: 503, code: 'FST_PG_POOL_CONNECTION_LOST' })
    const refused = await Promise.all(Array.from({ length: 3 }, () => timed(`${base}/one`)))
    for (const o of refused) {
      expect(o.status).toBe(503)
      expect(o.code).toMatch(/^FST_PG_POOL_(CONNECT_FAILED|ACQUIRE_TIMEOUT)$/)
      expect(o.ms).toBeLessThan(fastTimeouts.acquireTimeout + 300)
    }
    expect(proxy.accepted).toBeGreaterThan(acceptedBefore)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })

    proxy.setMode('pass')
    expect(await waitFor(async () => (await fetch(`${base}/one`)).status === 200, 3_000)).toBe(true)
    const after = await Promise.all(Array.from({ length: 10 }, () => timed(`${base}/one`)))
    expect(after.map((o) => o.status)).toEqual(Array(10).fill(200))
    // The reset connection's backend ends once its statement notices the client is gone.
    const gone = async () => {
      const [row] = await db.admin<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity where pid = ${held.pid}`
      return row?.n === 0
    }
    expect(await waitFor(gone, 3_000)).toBe(true)
  })
})

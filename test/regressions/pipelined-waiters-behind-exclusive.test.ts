import { request as httpRequest } from 'node:http'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

/** A GET on a socket of its own (no keep-alive socket left to hold app.close()). */
function get(url: string): Promise<{ status: number; body: { code?: string } }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        text += chunk
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }))
    })
    req.on('error', reject)
    req.end()
  })
}

// Found by hostile probing (failed before the fix): pipelined waiters queued behind a request that needs a connection of its own
// ("once one waits, pipelined requests queue behind it"), when that request leaves the queue.

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

const pipelined = { config: { db: { pipeline: true } } }

describe('pipelined waiters behind an exclusive waiter that leaves the queue', () => {
  test('the exclusive waiter hangs up: the pipelined waiter behind it joins the shared connection that has room', async () => {
    current = await coreApp(db.url, { max: 1, pipelineDepth: 8, acquireTimeout: 2_000, statementTimeout: 20_000 })
    const { app, applicationName } = current
    app.get('/long', pipelined, async (request) => (await request.db`select pg_sleep(4), 'long' as what`)[0])
    app.get('/quick', pipelined, async (request) => (await request.db`select 'quick' as what`)[0])
    app.get('/exclusive', async (request) => (await request.db`select 'exclusive' as what`)[0])
    const base = await listen(app)
    const long = get(`${base}/long`)
    await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(4)%')) === 1, 'the long statement runs')
    const exclusive = startRequest(`${base}/exclusive`)
    await waitUntil(() => app.pgPool.stats().waiting === 1, 'the exclusive request waits')
    const quick = get(`${base}/quick`)
    await waitUntil(() => app.pgPool.stats().waiting === 2, 'the pipelined request queues behind it')
    exclusive.abort()
    expect(await exclusive.done).toBe('aborted')
    // Nobody needs a connection alone any more: the pipelined waiter may join (1 of 8 shares used).
    const joined = await waitFor(() => app.pgPool.stats().pipelined === 2, 1_500)
    const [q, l] = await Promise.all([quick, long])
    expect({ joined, quick: q.status, code: q.body.code, long: l.status }).toEqual({
      joined: true,
      quick: 200,
      code: undefined,
      long: 200,
    })
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(app.pgPool.stats()).toMatchObject({ waiting: 0, pipelined: 0, sharedQueries: 0 })
  })

  test('the exclusive waiter times out: the pipelined waiter behind it joins the shared connection that has room', async () => {
    current = await coreApp(db.url, { max: 1, pipelineDepth: 8, acquireTimeout: 2_500, statementTimeout: 20_000 })
    const { app, applicationName } = current
    app.get('/long', pipelined, async (request) => (await request.db`select pg_sleep(6), 'long' as what`)[0])
    app.get('/quick', pipelined, async (request) => (await request.db`select 'quick' as what`)[0])
    app.get('/exclusive', async (request) => (await request.db`select 'exclusive' as what`)[0])
    const long = app.inject('/long')
    await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(6)%')) === 1, 'the long statement runs')
    const exclusive = app.inject('/exclusive')
    await waitUntil(() => app.pgPool.stats().waiting === 1, 'the exclusive request waits')
    // Queued well after it: when the exclusive one times out (its timer may fire late on a loaded
    // machine), this one's own deadline is still 1.2 s away. (In the fresh-clone CI, queued right
    // behind it, both had passed their deadline by the time the timer ran: 503 for both, rightly.)
    await new Promise((resolve) => setTimeout(resolve, 1_200))
    const quick = app.inject('/quick')
    await waitUntil(() => app.pgPool.stats().waiting === 2, 'the pipelined request queues behind it')
    const x = await exclusive
    expect(x.statusCode).toBe(503)
    expect(x.json().code).toBe('FST_PG_POOL_ACQUIRE_TIMEOUT')
    const [q, l] = await Promise.all([quick, long])
    expect({ quick: q.statusCode, code: q.json().code, long: l.statusCode }).toEqual({
      quick: 200,
      code: undefined,
      long: 200,
    })
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  })
})

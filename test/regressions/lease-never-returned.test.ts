import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'

// Issue 17 item 3: a first use of request.db after the request finished leased a connection
// that nobody returned (on fd52652: with max 1, every later request got 503 ACQUIRE_TIMEOUT).
// Every path of that family: the first use after the response, in an onResponse hook, after a
// hijacked reply ended, after handlerTimeout; and errors in onLease.

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

interface Late {
  code?: string
}

/** The next request must get the only connection at once. */
async function nextRequestServed(current: TestApp): Promise<void> {
  const { app } = current
  if (!app.hasRoute({ method: 'GET', url: '/next' })) throw new Error('register /next first')
  const response = await app.inject('/next')
  expect(response.statusCode).toBe(200)
  await waitUntil(() => app.pgPool.stats().leased === 0, 'no lease held')
}

describe('no lease outlives its request', () => {
  test('a first use 100 ms after the response is refused with FST_PG_POOL_RELEASED', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 500 })
    const { app } = current
    let late: Promise<Late> | undefined
    app.get('/fire-and-forget', async (request) => {
      late = sleep(100).then(() =>
        request.db`select 1`.then(
          () => ({}),
          (error: Late) => error,
        ),
      )
      return 'sent'
    })
    app.get('/next', async (request) => request.db`select 1 as one`)
    await app.ready()
    expect((await app.inject('/fire-and-forget')).statusCode).toBe(200)
    expect((await late)?.code).toBe('FST_PG_POOL_RELEASED')
    expect(app.pgPool.stats().leased).toBe(0)
    await nextRequestServed(current)
  })

  test('a first use after reply.send() within the handler is refused', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 500 })
    const { app } = current
    let late: Late | undefined
    app.get('/send-then-query', async (request, reply) => {
      reply.send('sent')
      late = await request.db`select 1`.then(
        () => ({}),
        (error: Late) => error,
      )
      return reply
    })
    app.get('/next', async (request) => request.db`select 1 as one`)
    await app.ready()
    expect((await app.inject('/send-then-query')).statusCode).toBe(200)
    await waitUntil(() => late !== undefined, 'the late query to settle')
    expect(late?.code).toBe('FST_PG_POOL_RELEASED')
    await nextRequestServed(current)
  })

  test('a first use in an onResponse hook is refused', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 500 })
    const { app } = current
    let late: Late | undefined
    app.addHook('onResponse', async (request) => {
      if (request.url !== '/audited') return
      late = await request.db`select 1`.then(
        () => ({}),
        (error: Late) => error,
      )
    })
    app.get('/audited', async () => 'no query in the handler')
    app.get('/next', async (request) => request.db`select 1 as one`)
    await app.ready()
    expect((await app.inject('/audited')).statusCode).toBe(200)
    await waitUntil(() => late !== undefined, 'the hook query to settle')
    expect(late?.code).toBe('FST_PG_POOL_RELEASED')
    await nextRequestServed(current)
  })

  test('a hijacked reply: the lease comes back when the raw response ends; later use is refused', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 500 })
    const { app } = current
    let late: Promise<Late> | undefined
    app.get('/hijacked', async (request, reply) => {
      reply.hijack()
      const [row] = await request.db`select 'raw' as v`
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.end(String(row?.v))
      late = sleep(50).then(() =>
        request.db`select 1`.then(
          () => ({}),
          (error: Late) => error,
        ),
      )
    })
    app.get('/next', async (request) => request.db`select 1 as one`)
    const base = await listen(app)
    const response = await fetch(`${base}/hijacked`)
    expect(await response.text()).toBe('raw')
    expect((await late)?.code).toBe('FST_PG_POOL_RELEASED')
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the hijacked lease to come back')
    await nextRequestServed(current)
  })

  test('a first use after handlerTimeout answered is refused', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 500 })
    const { app } = current
    let late: Late | undefined
    app.get('/timed-out', { handlerTimeout: 50 }, async (request) => {
      await sleep(150)
      late = await request.db`select 1`.then(
        () => ({}),
        (error: Late) => error,
      )
      return 'too late'
    })
    app.get('/next', async (request) => request.db`select 1 as one`)
    const base = await listen(app)
    expect((await fetch(`${base}/timed-out`)).status).toBe(503)
    await waitUntil(() => late !== undefined, 'the late query to settle')
    expect(late?.code).toBe('FST_PG_POOL_RELEASED')
    await nextRequestServed(current)
  })

  test('onLease that throws: the request fails with its error and the lease comes back', async () => {
    const refusal = Object.assign(new Error('no tenant'), { statusCode: 403, code: 'NO_TENANT' })
    current = await coreApp(
      db.url,
      { max: 1, acquireTimeout: 500 },
      {},
      {
        onLease: async (request) => {
          if (request.headers['x-tenant'] === undefined) throw refusal
        },
      },
    )
    const { app } = current
    app.get('/tenant', async (request) => request.db`select 1 as one`)
    app.get('/next', async (request) => request.db`select 1 as one`)
    await app.ready()
    for (let i = 0; i < 3; i++) {
      const response = await app.inject('/tenant')
      expect(response.statusCode).toBe(403)
      expect(response.json().code).toBe('NO_TENANT')
    }
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
    const ok = await app.inject({ url: '/next', headers: { 'x-tenant': 'a' } })
    expect(ok.statusCode).toBe(200)
  })

  test('onLease that never settles its own query still lets the lease come back with the request', async () => {
    current = await coreApp(
      db.url,
      { max: 1, acquireTimeout: 500 },
      {},
      {
        onLease: async (_request, db) => {
          await db`select pg_sleep(0.05)`
        },
      },
    )
    const { app } = current
    app.get('/aborted', { handlerTimeout: 20 }, async (request) => request.db`select 1 as one`)
    app.get('/next', async (request) => request.db`select 1 as one`)
    const base = await listen(app)
    expect((await fetch(`${base}/aborted`)).status).toBe(503)
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
    await nextRequestServed(current)
  })
})

import { request as httpRequest } from 'node:http'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase } from '../support/database.js'
import { listen } from '../support/http.js'

// Found by a seeded chaos storm (round ten of hostile probing), reduced: a statement sent by a
// handler after the pool had ended its lease (the pool closing past closeTimeout, a
// handlerTimeout) was refused with 500 FST_PG_POOL_RELEASED ("used after its request finished",
// no Retry-After), and one sent behind the cancelled statement of a route transaction surfaced as
// 500 25P02. Now FST_PG_POOL_CLOSED or _ABORTED with Retry-After, as the README says. Every test
// failed before the fix.

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

function get(url: string): Promise<{ status: number; code: string | undefined; retryAfter: unknown }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false }, (res) => {
      let body = ''
      res.on('data', (chunk) => {
        body += chunk
      })
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          code: (JSON.parse(body) as { code?: string }).code,
          retryAfter: res.headers['retry-after'],
        }),
      )
    })
    req.on('error', reject)
    req.end()
  })
}

const routes = {
  plain: {},
  transaction: { db: { transaction: true } },
  pipelined: { db: { pipeline: true } },
} as const

describe.each(Object.keys(routes) as (keyof typeof routes)[])('%s route', (kind) => {
  test('app.close() passes closeTimeout while the handler is between statements: 503 FST_PG_POOL_CLOSED, not 500 RELEASED', async () => {
    current = await coreApp(db.url, { max: 2, closeTimeout: 100 })
    const { app } = current
    app.get('/between', { config: routes[kind] }, async (request) => {
      await request.db`select 1`
      await sleep(400) // something else: an HTTP call, a timer
      await request.db`select 2`
      return { ok: true }
    })
    app.get('/running', { config: routes[kind] }, async (request) => {
      await request.db`select 1`
      await request.db`select pg_sleep(0.6)`
      return { ok: true }
    })
    const base = await listen(app)
    const between = get(`${base}/between`)
    const running = get(`${base}/running`)
    await sleep(50)
    await app.close()
    // running { status: 503, code: 'FST_PG_POOL_CLOSED', retryAfter: '1' }.
    expect({ between: await between, running: await running }).toEqual({
      between: { status: 503, code: 'FST_PG_POOL_CLOSED', retryAfter: '1' },
      running: { status: 503, code: 'FST_PG_POOL_CLOSED', retryAfter: '1' },
    })
  })
})

test("after a handlerTimeout, the handler's next statement fails with FST_PG_POOL_ABORTED (README), not RELEASED", async () => {
  current = await coreApp(db.url, { max: 2 })
  const { app } = current
  let failedWith: string | undefined
  app.get('/slow', { handlerTimeout: 100 }, async (request) => {
    await request.db`select 1`
    await sleep(300)
    try {
      await request.db`select 2`
    } catch (error) {
      failedWith = (error as { code?: string }).code
    }
    return { ok: true }
  })
  const base = await listen(app)
  expect((await get(`${base}/slow`)).code).toBe('FST_ERR_HANDLER_TIMEOUT')
  await sleep(400)
  expect(failedWith).toBe('FST_PG_POOL_ABORTED')
})

test('app.close() passes closeTimeout in a route transaction with a statement sent behind the running one: 503 FST_PG_POOL_CLOSED, not 500 25P02', async () => {
  current = await coreApp(db.url, { max: 2, closeTimeout: 100 })
  const { app } = current
  app.get('/both', { config: { db: { transaction: true } } }, async (request) => {
    // Two statements in flight (they travel together in a transaction); the first one's failure
    // is handled on its own.
    const slow = request.db`select pg_sleep(0.6)`.catch((error: { code?: string }) => `slow failed: ${error.code}`)
    const [row] = await request.db`select 2 as two`
    return { slow: await slow, row }
  })
  const base = await listen(app)
  const both = get(`${base}/both`)
  await sleep(50)
  await app.close()
  expect(await both).toEqual({ status: 503, code: 'FST_PG_POOL_CLOSED', retryAfter: '1' })
})

test('app.close() passes closeTimeout with a statement queued behind the running one (no transaction): FST_PG_POOL_CLOSED, not ABORTED', async () => {
  current = await coreApp(db.url, { max: 2, closeTimeout: 100 })
  const { app } = current
  app.get('/queued', async (request) => {
    // Outside a transaction the second waits in the pool until the first has ended.
    const slow = request.db`select pg_sleep(0.6)`.catch((error: { code?: string }) => `slow failed: ${error.code}`)
    const [row] = await request.db`select 2 as two`
    return { slow: await slow, row }
  })
  const base = await listen(app)
  const queued = get(`${base}/queued`)
  await sleep(50)
  await app.close()
  expect(await queued).toEqual({ status: 503, code: 'FST_PG_POOL_CLOSED', retryAfter: '1' })
})

import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../../../support/database.js'

// What the user does: moves @fastify/postgres code over as the migration guide maps it,
// `fastify.pg.query(text, values)` → `request.db.unsafe(text, values)`, `fastify.pg.connect()` →
// `app.db.lease()`, keeping pg's other call forms that @fastify/postgres's README shows: a query
// config object (`query({ text, values })`), a result callback (`query(text, values, onResult)`),
// `connect(onConnect)`.
// What they should get: an error at once (a 500 naming the form), the connection back.
// What they got (postgres.js rejects `unsafe({ text })` with a syntax error on its own): the
// statement's promise never settled (the lease's bookkeeping threw on a text that is no string),
// so `app.db.unsafe({ text })` hung forever holding its connection, and the request that ran it
// never answered, its connection leased until the client gave up (max 1: every other request 503
// ACQUIRE_TIMEOUT); a callback was taken for options and never called (the request hung); and
// `lease(onConnect)` leased a connection nobody could release.

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

/** What `promise` settles with within `ms`, or 'pending' (the correct answer comes at once). */
async function within<T>(promise: Promise<T>, ms = 8_000): Promise<{ value?: T; error?: unknown } | 'pending'> {
  let timer: NodeJS.Timeout | undefined
  const pending = new Promise<'pending'>((resolve) => {
    timer = setTimeout(() => resolve('pending'), ms)
  })
  try {
    return await Promise.race([
      promise.then(
        (value) => ({ value }),
        (error: unknown) => ({ error }),
      ),
      pending,
    ])
  } finally {
    clearTimeout(timer)
  }
}

type Unsafe = (...args: unknown[]) => Promise<unknown>

describe('pg call forms given to unsafe() and lease() fail at once and leak nothing', () => {
  test('request.db.unsafe({ text, values }) (a pg query config) answers a 500; the connection comes back', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 1_000 })
    const { app } = current
    app.get('/config', async (request) =>
      (request.db.unsafe as unknown as Unsafe)({ text: 'select $1::int as x', values: [1] }),
    )
    app.get('/next', async (request) => request.db`select 1 as one`)
    const response = await within(app.inject('/config'))
    expect(response).not.toBe('pending')
    if (response === 'pending') return
    expect(response.value?.statusCode).toBe(500)
    expect(response.value?.json()).toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
    expect((await app.inject('/next')).json()).toEqual([{ one: 1 }])
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  })

  test('app.db.unsafe({ text, values }) rejects; it holds no connection', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 1_000 })
    const { app } = current
    // As awaited in an async function (the refusal may be thrown where it is called).
    const outcome = await within(
      (async () => (app.db.unsafe as unknown as Unsafe)({ text: 'select 1 as x', values: [] }))(),
    )
    expect(outcome).not.toBe('pending')
    if (outcome === 'pending') return
    expect(outcome.error).toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
    expect(await app.db`select 2 as two`).toEqual([{ two: 2 }])
    expect(app.pgPool.stats().leased).toBe(0)
  })

  test("request.db.unsafe(text, values, onResult) (@fastify/postgres's README form) answers instead of hanging", async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 1_000 })
    const { app } = current
    let called = false
    app.get('/callback', (request, reply) => {
      ;(request.db.unsafe as unknown as Unsafe)('select $1::int as x', [1], (error: unknown, result: unknown) => {
        called = true
        reply.send(error ?? result)
      })
    })
    const response = await within(app.inject('/callback'))
    expect(response).not.toBe('pending')
    if (response === 'pending') return
    expect(called).toBe(false)
    expect(response.value?.statusCode).toBe(500)
    expect(response.value?.json()).toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
  })

  test('app.db.lease(onConnect) (pg’s connect(callback)) is refused and leases nothing', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 1_000 })
    const { app } = current
    let called = false
    const lease = app.db.lease as unknown as (...args: unknown[]) => Promise<{ release(): Promise<void> }>
    const outcome = await within(
      lease(() => {
        called = true
      }),
    )
    if (outcome !== 'pending' && outcome.value !== undefined) await outcome.value.release()
    expect(outcome).not.toBe('pending')
    if (outcome === 'pending') return
    expect(outcome.error).toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
    expect(called).toBe(false)
    expect(app.pgPool.stats().leased).toBe(0)
  })
})

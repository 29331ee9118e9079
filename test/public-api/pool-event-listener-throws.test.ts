import pgPoolCore, { type PoolEvents } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'

// Found by hostile probing (types and migration). The migration guide maps `fastify.pg.pool.on(...)`
// to `app.pgPool.on(event, fn)` ("The pool: fastify.pg.pool → app.pgPool", its sample listens to
// 'close'), and the core README calls app.pgPool "the read-only view ... nothing on it changes the
// pool". A listener of the app's that throws (a logging or metrics bug) must stay the app's problem:
// the suite's other callbacks are guarded (`onnotice`/`onclose`: "a throw in them ... is not let
// through"; `listen` handlers: "never fatal"; `app.pgPools.onClosed`: a throwing listener "does
// not ... fail close", test/instances/close-observers.test.ts).
//
// What happens instead: view.on() (packages/core/src/view.ts:65-67) adds the listener to the pool's
// own EventEmitter, and the pool emits synchronously in the middle of its state changes
// (packages/core/src/pool.ts: 'acquire' :249/:576, 'release' :316/:326, 'transaction' :229,
// 'leak' :180, 'close' :627). The throw escapes into the pool:
//   'release'     → the request answers 500, its connection never comes back: every later request 503
//   'acquire'     → the request never answers (unhandled rejection), the connection stays leased
//   'transaction' → 500, then the connection stays leased: every later request 503
//   'leak'        → an uncaught exception from the pool's timer (a real process exits)
//   'close'       → app.close() rejects with the listener's error
// Expected (each test): the listener's error is contained; requests answer 200, nothing stays
// leased, app.close() resolves and closes every server connection.

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})

const within = <T>(promise: Promise<T>, ms: number): Promise<T | 'no answer'> =>
  Promise.race([promise, new Promise<'no answer'>((resolve) => setTimeout(() => resolve('no answer'), ms))])

async function appWithThrowingListener(
  event: keyof PoolEvents,
  pool: Record<string, number> = {},
): Promise<{ app: FastifyInstance; applicationName: string; calls: () => number }> {
  const applicationName = uniqueName('evthrow')
  const app = Fastify()
  await app.register(pgPoolCore, {
    connection: db.url,
    pool: { max: 1, acquireTimeout: 2_000, closeTimeout: 1_000, applicationName, pgbouncer: db.viaBouncer, ...pool },
  })
  let calls = 0
  app.pgPool.on(event, () => {
    calls++
    throw new Error(`the app's ${event} listener failed`)
  })
  return { app, applicationName, calls: () => calls }
}

async function threeRequests(app: FastifyInstance, url: string): Promise<(number | string)[]> {
  const statuses: (number | string)[] = []
  for (let i = 0; i < 3; i++) {
    const response = await within(app.inject(url), 8_000)
    statuses.push(typeof response === 'string' ? response : response.statusCode)
  }
  return statuses
}

async function closeAndCount(app: FastifyInstance, applicationName: string) {
  const closed = await within(
    app.close().then(
      () => 'closed',
      (error: Error) => `rejected: ${error.message}`,
    ),
    15_000,
  )
  await waitFor(async () => (await db.countConnections(applicationName)) === 0, 3_000)
  return { closed, connections: await db.countConnections(applicationName) }
}

describe('a pool event listener of the app that throws does not break the pool', () => {
  test("'release': every request answers 200 and the connection comes back", async () => {
    const { app, applicationName, calls } = await appWithThrowingListener('release')
    app.get('/', async (request) => (await request.db`select 1 as one`)[0])
    const statuses = await threeRequests(app, '/')
    const leased = app.pgPool.stats().leased
    const end = await closeAndCount(app, applicationName)
    expect(calls()).toBeGreaterThan(0)
    expect({ statuses, leased, ...end }).toEqual({
      statuses: [200, 200, 200],
      leased: 0,
      closed: 'closed',
      connections: 0,
    })
  }, 60_000)

  test("'acquire': every request answers 200 and nothing stays leased", async () => {
    const { app, applicationName, calls } = await appWithThrowingListener('acquire')
    app.get('/', async (request) => (await request.db`select 1 as one`)[0])
    const statuses = await threeRequests(app, '/')
    const leased = app.pgPool.stats().leased
    const end = await closeAndCount(app, applicationName)
    expect(calls()).toBeGreaterThan(0)
    expect({ statuses, leased, ...end }).toEqual({
      statuses: [200, 200, 200],
      leased: 0,
      closed: 'closed',
      connections: 0,
    })
  }, 60_000)

  test("'transaction': route transactions commit, answer 200, and give their connection back", async () => {
    const { app, applicationName, calls } = await appWithThrowingListener('transaction')
    app.get('/', { config: { db: { transaction: true } } }, async (request) => (await request.db`select 1 as one`)[0])
    const statuses = await threeRequests(app, '/')
    const leased = app.pgPool.stats().leased
    const end = await closeAndCount(app, applicationName)
    expect(calls()).toBeGreaterThan(0)
    expect({ statuses, leased, ...end }).toEqual({
      statuses: [200, 200, 200],
      leased: 0,
      closed: 'closed',
      connections: 0,
    })
  }, 60_000)

  test("'leak': the pool's leak warning does not throw the listener's error out of a timer", async () => {
    const uncaught: string[] = []
    const onUncaught = (error: Error) => uncaught.push(error.message)
    process.on('uncaughtException', onUncaught)
    try {
      const { app, applicationName, calls } = await appWithThrowingListener('leak', { leakDetectionThreshold: 50 })
      app.get('/', async (request) => {
        const [row] = await request.db`select 1 as one`
        await new Promise((resolve) => setTimeout(resolve, 400)) // held past leakDetectionThreshold
        return row
      })
      const response = await within(app.inject('/'), 8_000)
      await waitFor(() => calls() > 0, 2_000)
      const end = await closeAndCount(app, applicationName)
      expect(calls()).toBeGreaterThan(0)
      expect({
        status: typeof response === 'string' ? response : response.statusCode,
        uncaught: uncaught.filter((message) => message.includes('leak listener')),
        ...end,
      }).toEqual({ status: 200, uncaught: [], closed: 'closed', connections: 0 })
    } finally {
      process.off('uncaughtException', onUncaught)
    }
  }, 60_000)

  test("'close': app.close() resolves and closes every connection", async () => {
    const { app, applicationName, calls } = await appWithThrowingListener('close')
    await app.db`select 1`
    const end = await closeAndCount(app, applicationName)
    expect(calls()).toBeGreaterThan(0)
    expect(end).toEqual({ closed: 'closed', connections: 0 })
  }, 60_000)
})

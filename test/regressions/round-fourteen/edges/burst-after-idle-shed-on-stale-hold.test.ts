import Fastify, { type FastifyInstance } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, uniqueName, waitFor } from '../../../support/database.js'

/**
 * Admission estimates a request's wait from the mean hold time of recent leases, "the last known
 * value while no lease comes back". On a pool that sat idle, that value is the hold of the last
 * lease before the pause, however long ago: one slow report (1 s) and, seconds later, a pool of
 * two with one request waiting refuses the next arrival with 503 FST_PG_POOL_OVERLOADED
 * ("would wait 500 ms"), although the work now takes 100 ms a lease and a cold pool would
 * have admitted it.
 */

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

test('the first small queue after an idle pause is not judged by the lease before the pause', async () => {
  const instance = Fastify()
  app = instance
  await instance.register(pgPool, {
    connection: db.url,
    pool: { max: 2, applicationName: uniqueName() },
    backpressure: { retryStorm: false, process: false },
  })
  instance.get('/report', async (request) => request.db`select pg_sleep(1)`)
  instance.get('/medium', async (request) => request.db`select pg_sleep(0.1)`)
  instance.get('/fast', async (request) => request.db`select 1 as one`)
  await instance.ready()
  // Both connections open, then one slow report, then an idle pause.
  await Promise.all([instance.inject('/fast'), instance.inject('/fast')])
  expect((await instance.inject('/report')).statusCode).toBe(200)
  await sleep(1_500)
  expect(instance.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })

  // Two requests hold both connections, a third waits for one.
  const held = [
    instance.inject('/medium').then((r) => r.statusCode),
    instance.inject('/medium').then((r) => r.statusCode),
  ]
  expect(await waitFor(() => instance.pgPool.stats().leased === 2)).toBe(true)
  const third = instance.inject('/medium').then((r) => r.statusCode)
  expect(await waitFor(() => instance.pgPool.stats().waiting === 1)).toBe(true)
  // The next arrival: one waiter ahead of it on a pool of two.
  const next = await instance.inject('/fast')
  expect(next.statusCode, next.body).toBe(200)
  expect(await Promise.all([...held, third])).toEqual([200, 200, 200])
}, 30_000)

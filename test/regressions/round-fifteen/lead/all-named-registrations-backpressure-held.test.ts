// HELD: an app whose umbrella registrations all have a name gets no admission control from them
// (backpressure comes with the unnamed registration, umbrella README); registering
// @fastify-pg-pool/backpressure itself after them covers their routes: under process pressure a
// route of a named instance is refused with the coded 503, the health probes still answer.
import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase } from '../../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

test('backpressure registered by itself covers the routes of named registrations', async () => {
  const app = Fastify()
  try {
    await app.register(pgPool, { name: 'orders', connection: db.url, pool: { max: 1 } })
    expect(app.hasDecorator('memoryUsage')).toBe(false)
    await app.register(pgPoolBackpressure, { process: { maxHeapUsedBytes: 1, sampleInterval: 50 } })
    app.get('/orders', { config: { db: { instance: 'orders' } } }, async (request) => {
      const [row] = await request.db<{ one: number }[]>`select 1 as one`
      return row
    })
    await app.ready()
    await sleep(150)
    const refused = await app.inject('/orders')
    expect(refused.statusCode).toBe(503)
    expect(refused.json()).toMatchObject({ code: 'FST_PG_POOL_PROCESS_PRESSURE' })
    expect(refused.headers['retry-after']).toBeDefined()
    expect((await app.inject('/health/live')).statusCode).toBe(200)
  } finally {
    await app.close()
  }
})

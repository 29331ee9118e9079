import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, uniqueName } from '../support/database.js'
import { listen } from '../support/http.js'
import { codeOf, sendOk } from './support.js'

// Found by hostile probing (round ten, rollouts): the core started its closeTimeout clock in its own
// preClose hook, ahead of health's, which sleeps drainDelay while the app still serves. With a
// drain longer than closeTimeout (a load balancer's 30 s deregistration against the default 10 s),
// the pool closed mid-drain, and every request routed to the pod for the rest of it got a 503:
// with admission control FST_PG_POOL_QUEUE_FULL, counted as shed (an overload alert in a rollout).
// The clock now starts when Fastify stops accepting connections; admission leaves a closing pool to
// the core (packages/backpressure/test/admission.test.ts). The test failed before the fix.

let db: TestDatabase
let app: FastifyInstance | undefined
let closing: Promise<unknown> | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await (closing ?? app?.close())
  app = undefined
  closing = undefined
})
afterAll(() => db.drop())

/** Umbrella app for a load balancer without preStop; closes it and waits for the pool to end mid-drain. */
async function drainingApp(): Promise<{ base: string; app: FastifyInstance }> {
  const server = Fastify({ return503OnClosing: false })
  app = server
  await server.register(pgPool, {
    connection: db.url,
    pool: { max: 2, closeTimeout: 200, applicationName: uniqueName() },
    health: { drainDelay: 3_000 },
  })
  server.get('/items', async (request) => (await request.db`select 1 as one`)[0])
  const base = await listen(server)
  expect((await sendOk(`${base}/items`)).status).toBe(200)
  closing = server.close()
  // Past closeTimeout, whatever the machine's speed (the drain lasts 3 s): the pool still serves.
  await sleep(600)
  expect(server.pgPool.stats().accepting).toBe(true)
  const ready = await sendOk(`${base}/health/ready`)
  expect(ready.status).toBe(503)
  expect(JSON.parse(ready.body)).toMatchObject({ status: 'fail', output: 'shutting down' })
  return { base, app: server }
}

describe('drainDelay longer than closeTimeout', () => {
  test('a request routed to the pod during the drain is served (the README: other routes keep serving)', async () => {
    const { base } = await drainingApp()
    const answer = await sendOk(`${base}/items`)
    expect({ status: answer.status, code: codeOf(answer) }).toEqual({ status: 200, code: undefined })
  })
})

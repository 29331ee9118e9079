// Round sixteen (life-cycle probe): an app with `health: { drainDelay }` (the load-balancer
// drain of the health README) whose start fails: a named instance's database does not exist, so
// app.ready() rejects with FST_PG_POOL_CONNECT_FAILED. The app never served a request nor a
// readiness probe, and yet its app.close() (a test's afterEach, a process's shutdown after a failed
// start) sat out the whole drainDelay, readiness "answering 503" to nobody: a deployment with
// drainDelay 20 s took 20 s to exit after every failed start. The drain is for an app that
// started: one whose start failed closes at once, and leaves no backend behind.
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

test('ready() rejected: close() does not wait out drainDelay', { timeout: 60_000 }, async () => {
  const name = uniqueName('dd')
  const missing = new URL(db.directUrl)
  missing.pathname = `/${uniqueName('no_such_db')}`
  const app = Fastify()
  app.register(pgPool, {
    connection: db.directUrl,
    pool: { max: 1, applicationName: name, closeTimeout: 40_000 },
    health: { drainDelay: 20_000 },
  })
  app.register(pgPool, {
    name: 'reports',
    connection: missing.toString(),
    pool: { max: 1, applicationName: `${name}-r`, connectTimeout: 2_000 },
  })
  await expect(app.ready()).rejects.toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED' })
  const outcome = await Promise.race([
    app.close().then(() => 'closed'),
    new Promise((resolve) => setTimeout(resolve, 10_000, 'still draining after 10 s')).then(String),
  ])
  expect(outcome).toBe('closed')
  expect(await waitFor(async () => (await db.countConnections(name)) === 0, 10_000)).toBe(true)
})

test('an app that started still drains for drainDelay before closing', { timeout: 60_000 }, async () => {
  const app = Fastify()
  app.register(pgPool, {
    connection: db.directUrl,
    pool: { max: 1, applicationName: uniqueName('dd'), closeTimeout: 5_000 },
    health: { drainDelay: 300 },
  })
  await app.ready()
  const started = performance.now()
  await app.close()
  expect(performance.now() - started).toBeGreaterThanOrEqual(250)
})

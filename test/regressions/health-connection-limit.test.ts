import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, type TestDatabase, urlAs } from '../support/database.js'
import { listen } from '../support/http.js'

// Found by hostile probing (round ten, server-side actions): with `ALTER ROLE app CONNECTION LIMIT 2`
// and `pool.max: 2`, once the pool held both connections, the readiness ping (a connection of its
// own) was refused with 53300 and /health/ready answered 503 "database unreachable" while the very
// next request was served: every replica at its limit would leave the load balancer at once. It
// now warns (200) when the pool holds open connections. Failed before the fix (PostgreSQL 15, 18).

let db: TestDatabase
let app: FastifyInstance | undefined
const tag = Math.random().toString(16).slice(2, 8)
const login = `pss_health_${tag}`
const password = `pw_${tag}`
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  await db.admin.unsafe(`create role ${login} login password '${password}' connection limit 2`)
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop([login]))

test('role CONNECTION LIMIT = pool.max, both connections open and serving: /health/ready does not fail', async () => {
  const a = Fastify()
  app = a
  await a.register(pgPool, {
    connection: urlAs(db.url, login, password),
    pool: { max: 2, idleTimeout: 0, applicationName: `pss-health-${tag}` },
    health: { cacheTime: 0 },
    metrics: false,
    backpressure: false,
  })
  a.get('/work', async (request) => (await request.db`select pg_sleep(0.2), 1 as one`)[0])
  const base = await listen(a)
  expect((await fetch(`${base}/health/ready`)).status).toBe(200)
  const work = await Promise.all([1, 2, 3, 4].map(() => fetch(`${base}/work`)))
  expect(work.map((r) => r.status)).toEqual([200, 200, 200, 200])
  expect(a.pgPool.stats()).toMatchObject({ open: 2, leased: 0 })
  const ready = await fetch(`${base}/health/ready`)
  const body = await ready.text()
  // The pool still serves: the database is reachable.
  expect((await fetch(`${base}/work`)).status).toBe(200)
  expect(body).not.toContain('unreachable')
  expect(ready.status, body).toBe(200)
  expect(JSON.parse(body)).toMatchObject({ status: 'warn' })
  expect(body).toContain('no connection slot for the ping (53300)')
})

test('the slots taken by others, the pool holding none: readiness fails (the app cannot serve)', async () => {
  const others = postgres(urlAs(db.directUrl, login, password), { max: 2, onnotice: () => {} })
  try {
    await Promise.all([others`select pg_sleep(0.05)`, others`select pg_sleep(0.05)`])
    const a = Fastify()
    app = a
    await a.register(pgPool, {
      connection: urlAs(db.url, login, password),
      pool: { lazy: true, max: 2, applicationName: `pss-health-none-${tag}` },
      health: { cacheTime: 0 },
      metrics: false,
      backpressure: false,
    })
    const base = await listen(a)
    const ready = await fetch(`${base}/health/ready`)
    const body = await ready.text()
    expect(ready.status, body).toBe(503)
    expect(body).toContain('database unreachable (FST_PG_POOL_CONNECT_FAILED)')
  } finally {
    await others.end({ timeout: 1 })
  }
})

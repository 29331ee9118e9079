// Round fifteen (metrics probe). What the user does: registers the core, then admission control
// (as the backpressure README shows) or an authentication onRequest hook (or
// @fastify/under-pressure, rate limiting...), then the metrics plugin, and builds the error-rate
// panel from pg_pool_http_request_duration_seconds_count{status_class="5xx"} / all.
// What they should get: every response the app sent is in the HTTP histogram: the 503 that
// admission control answered (also counted in pg_pool_requests_shed_total) under 5xx, the 401
// under 4xx.
// What they got: the histogram times a request from its own onRequest hook, which Fastify never
// runs once an earlier onRequest hook has replied: the 503s and 401s were missing, the panel read
// 0 % errors while clients saw 503s.
import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../../../metrics/exposition.js'
import { coreApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

test('responses of an earlier onRequest hook (admission control, authentication) are in the HTTP histogram', async () => {
  const { app } = await coreApp(db.url, { max: 1, maxWaiting: 1, acquireTimeout: 20_000 })
  app.addHook('onRequest', async (request, reply) => {
    if (request.url === '/private') await reply.code(401).send({ message: 'unauthorized' })
  })
  await app.register(pgPoolBackpressure, { process: false, retryStorm: false })
  await app.register(pgPoolMetrics)
  app.get('/lock', async (request) => {
    await request.db`select pg_advisory_lock(4242)`
    await request.db`select pg_advisory_unlock(4242)`
    return { ok: true }
  })
  app.get('/private', async () => ({ secret: true }))

  const holder = await db.sql.reserve()
  try {
    await holder`select pg_advisory_lock(4242)`
    const leased = app.inject('/lock')
    await waitUntil(() => app.pgPool.stats().leased === 1, 'the connection leased')
    const waiting = app.inject('/lock')
    await waitUntil(() => app.pgPool.stats().waiting === 1, 'a waiter')
    const shed = await app.inject('/lock')
    expect(shed.statusCode).toBe(503)
    expect((await app.inject('/private')).statusCode).toBe(401)
    await holder`select pg_advisory_unlock(4242)`
    expect((await leased).statusCode).toBe(200)
    expect((await waiting).statusCode).toBe(200)
  } finally {
    holder.release()
  }

  const m = parseExposition((await app.inject('/metrics')).body)
  expect(m.value('pg_pool_requests_shed_total', { pool: 'primary', reason: 'queue_full' })).toBe(1)
  const count = (labels: Record<string, string>) =>
    m.find('pg_pool_http_request_duration_seconds_count', labels).reduce((sum, s) => sum + s.value, 0)
  expect({
    ok: count({ route: '/lock', status_class: '2xx' }),
    shed: count({ route: '/lock', status_class: '5xx' }),
    unauthorized: count({ route: '/private', status_class: '4xx' }),
  }).toEqual({ ok: 2, shed: 1, unauthorized: 1 })
  // Consistent as always: +Inf bucket = count, and a duration for each.
  for (const c of m.find('pg_pool_http_request_duration_seconds_count')) {
    expect(m.value('pg_pool_http_request_duration_seconds_bucket', { ...c.labels, le: '+Inf' })).toBe(c.value)
    expect(m.value('pg_pool_http_request_duration_seconds_sum', c.labels)).toBeGreaterThan(0)
  }
  await app.close()
})

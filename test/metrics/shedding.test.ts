import type { FastifyInstance } from 'fastify'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'
import { parseExposition } from './exposition.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

describe('with admission control (the umbrella plugin)', () => {
  test('requests shed at the queue cap are counted, and /metrics keeps answering', async () => {
    const app: FastifyInstance = Fastify()
    try {
      await app.register(pgPool, {
        connection: db.url,
        pool: { max: 2, maxWaiting: 4, acquireTimeout: 5_000, applicationName: uniqueName() },
        health: false,
      })
      app.get('/slow', async (request) => {
        await request.db`select pg_sleep(1)`
        return { slept: true }
      })
      const base = await listen(app)
      const responses = Array.from({ length: 12 }, () =>
        fetch(`${base}/slow`).then(async (r) => ({ status: r.status, body: await r.text() })),
      )
      await waitUntil(() => app.pgPool.stats().leased === 2 && app.pgPool.stats().waiting > 0, 'waiters')

      // Overloaded: /metrics is exempt from admission control and never waits for the pool.
      const started = performance.now()
      const scrape = await fetch(`${base}/metrics`)
      expect(scrape.status).toBe(200)
      await scrape.text()
      expect(performance.now() - started).toBeLessThan(50)

      const done = await Promise.all(responses)
      const code = (body: string) => (JSON.parse(body) as { code?: string }).code
      const queueFull = done.filter((r) => r.status === 503 && code(r.body) === 'FST_PG_POOL_QUEUE_FULL').length
      const overloaded = done.filter((r) => r.status === 503 && code(r.body) === 'FST_PG_POOL_OVERLOADED').length
      console.log(`12 requests: ${queueFull} queue full, ${overloaded} overloaded`)
      expect(queueFull + overloaded).toBeGreaterThan(0)
      expect(done.filter((r) => r.status === 200).length + queueFull + overloaded).toBe(12)

      const m = parseExposition(await (await fetch(`${base}/metrics`)).text())
      // Queue-full refusals come from admission control (shed) or, racing it, from the pool itself.
      expect(
        m.value('pg_pool_requests_shed_total', { reason: 'queue_full' }) +
          m.value('pg_pool_acquires_total', { result: 'rejected' }),
      ).toBe(queueFull)
      expect(m.value('pg_pool_requests_shed_total', { reason: 'queue_delay' })).toBe(overloaded)
      const http = 'pg_pool_http_request_duration_seconds_count'
      expect(m.value(http, { route: '/slow', status_class: '5xx' })).toBe(queueFull + overloaded)
      expect(m.value(http, { route: '/slow', status_class: '2xx' })).toBe(12 - queueFull - overloaded)
      expect(m.value('pg_pool_acquires_total', { result: 'ok' })).toBe(12 - queueFull - overloaded)
    } finally {
      await app.close()
    }
  })
})

import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'
import { parseExposition } from './exposition.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

describe('scraping a saturated pool', () => {
  test('every connection leased and 20 waiters: /metrics answers in under 50 ms', async () => {
    const { app } = await coreApp(db.url, { max: 2, maxWaiting: 50, acquireTimeout: 5_000 })
    try {
      await app.register(pgPoolMetrics)
      app.get('/slow', async (request) => {
        await request.db`select pg_sleep(1.5)`
        return { slept: true }
      })
      // The server's own time for each scrape, from the request's arrival to its response.
      const served: number[] = []
      app.addHook('onResponse', (request, reply, done) => {
        if (request.url === '/metrics') served.push(reply.elapsedTime)
        done()
      })
      const base = await listen(app)
      // The client's first fetch loads undici and opens the socket: not the server's time.
      expect((await fetch(`${base}/metrics`)).status).toBe(200)
      const requests = Array.from({ length: 22 }, () => startRequest(`${base}/slow`))
      await waitUntil(
        () => app.pgPool.stats().leased === 2 && app.pgPool.stats().waiting === 20,
        '2 leases, 20 waiters',
      )

      const timings: number[] = []
      let last = ''
      for (let i = 0; i < 10; i++) {
        const started = performance.now()
        const response = await fetch(`${base}/metrics`)
        last = await response.text()
        timings.push(performance.now() - started)
        expect(response.status).toBe(200)
      }
      const m = parseExposition(last)
      expect(m.value('pg_pool_waiters')).toBe(20)
      expect(m.value('pg_pool_connections', { state: 'leased' })).toBe(2)
      expect(m.value('pg_pool_oldest_wait_seconds')).toBeGreaterThan(0)
      expect(m.value('pg_pool_shared_connections')).toBe(0)
      expect(m.value('pg_pool_pipelined_requests')).toBe(0)
      console.log(
        `scrape ms while saturated: ${timings.map((t) => t.toFixed(1)).join(' ')} (server: ${served.map((t) => t.toFixed(1)).join(' ')})`,
      )
      // Under 50 ms as the server measures it. Seen from the client, the machine's own stalls
      // add to that (the slowest of ten was 51 ms once in CI; here the client's 14.6 ms was the
      // server's 1.1), so the client's bound is that no scrape queued behind the 1.5 s leases.
      // served[0] is the warm-up scrape, before the pool was saturated and on a cold process
      // (60 ms once in CI, on a loaded machine): not what this test bounds.
      expect(served).toHaveLength(11)
      expect(Math.max(...served.slice(1))).toBeLessThan(50)
      expect(Math.max(...timings)).toBeLessThan(1_000)

      for (const request of requests) request.abort()
      await Promise.all(requests.map((r) => r.done))
    } finally {
      await app.close()
    }
  })

  test('pipelined requests sharing connections are visible as gauges', async () => {
    const { app } = await coreApp(db.url, { max: 2, pipelineDepth: 4 })
    try {
      await app.register(pgPoolMetrics)
      app.get('/shared', { config: { db: { pipeline: true } } }, async (request) => {
        await request.db`select pg_sleep(0.5)`
        return { slept: true }
      })
      const requests = Array.from({ length: 6 }, () => app.inject('/shared'))
      await waitUntil(() => app.pgPool.stats().pipelined === 6, '6 pipelined requests')
      const m = parseExposition((await app.inject('/metrics')).body)
      expect(m.value('pg_pool_pipelined_requests')).toBe(6)
      expect(m.value('pg_pool_shared_connections')).toBe(2)
      expect(m.value('pg_pool_connections', { state: 'leased' })).toBe(2)
      expect((await Promise.all(requests)).map((r) => r.statusCode)).toEqual(Array(6).fill(200))
      const after = parseExposition((await app.inject('/metrics')).body)
      expect(after.value('pg_pool_pipelined_requests')).toBe(0)
    } finally {
      await app.close()
    }
  })
})

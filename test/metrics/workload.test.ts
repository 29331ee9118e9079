import pgPoolMetrics from '@fastify-pg-pool/metrics'
import type { FastifyInstance } from 'fastify'
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

async function scrape(app: FastifyInstance) {
  const response = await app.inject({ url: '/metrics' })
  expect(response.statusCode).toBe(200)
  return parseExposition(response.body)
}

describe('a scripted workload', () => {
  test('N successes, M acquire timeouts, K aborts and one leak are counted exactly', async () => {
    const N = 7
    const M = 3
    const K = 2
    const { app, applicationName } = await coreApp(db.url, {
      max: 2,
      acquireTimeout: 300,
      leakDetectionThreshold: 1_000,
    })
    try {
      await app.register(pgPoolMetrics)
      app.get('/work', async (request) => (await request.db`select 1 as one`)[0])
      app.get('/hold', async (request) => {
        await request.db`select pg_sleep(0.7)`
        return { held: true }
      })
      app.get('/leaky', async (request) => {
        await request.db`select pg_sleep(1.4)`
        return { leaked: true }
      })
      const base = await listen(app)
      const get = async (path: string) => (await fetch(`${base}${path}`)).status

      const start = await scrape(app)
      expect(start.value('pg_pool_acquires_total', { result: 'ok' })).toBe(0)
      expect(start.value('pg_pool_requests_shed_total', { reason: 'queue_full' })).toBe(0)

      // N successes, one after the other.
      for (let i = 0; i < N; i++) expect(await get('/work')).toBe(200)

      // M acquire timeouts: both connections held for 700 ms, M requests wait 300 ms.
      const holders = [startRequest(`${base}/hold`), startRequest(`${base}/hold`)]
      await waitUntil(() => app.pgPool.stats().leased === 2, 'two leases')
      const timedOut = await Promise.all(Array.from({ length: M }, () => get('/work')))
      expect(timedOut).toEqual(Array(M).fill(503))
      expect(await Promise.all(holders.map((h) => h.done))).toEqual([200, 200])

      // K requests abort while they wait for a connection.
      const holders2 = [startRequest(`${base}/hold`), startRequest(`${base}/hold`)]
      await waitUntil(() => app.pgPool.stats().leased === 2, 'two leases')
      const waiters = Array.from({ length: K }, () => startRequest(`${base}/work`))
      await waitUntil(() => app.pgPool.stats().waiting === K, `${K} waiters`)
      for (const waiter of waiters) waiter.abort()
      expect(await Promise.all(waiters.map((w) => w.done))).toEqual(Array(K).fill('aborted'))
      expect(await Promise.all(holders2.map((h) => h.done))).toEqual([200, 200])

      // One lease held past leakDetectionThreshold.
      expect(await get('/leaky')).toBe(200)
      // Two unknown URLs share one route label.
      expect(await get('/nope')).toBe(404)
      expect(await get('/nope/deeper')).toBe(404)
      await waitUntil(() => app.pgPool.stats().leased === 0, 'every lease back')

      const m = await scrape(app)
      const ok = N + 4 + 1
      expect(m.value('pg_pool_acquires_total', { result: 'ok' })).toBe(ok)
      expect(m.value('pg_pool_acquires_total', { result: 'timeout' })).toBe(M)
      expect(m.value('pg_pool_acquires_total', { result: 'aborted' })).toBe(K)
      expect(m.value('pg_pool_acquires_total', { result: 'rejected' })).toBe(0)
      expect(m.value('pg_pool_acquires_total', { result: 'error' })).toBe(0)
      expect(m.value('pg_pool_acquire_seconds_count')).toBe(ok)
      expect(m.value('pg_pool_leaks_total')).toBe(1)
      expect(m.value('pg_pool_lease_seconds_count', { route: '/work' })).toBe(N)
      expect(m.value('pg_pool_lease_seconds_count', { route: '/hold' })).toBe(4)
      expect(m.value('pg_pool_lease_seconds_count', { route: '/leaky' })).toBe(1)
      expect(m.value('pg_pool_lease_seconds_bucket', { route: '/leaky', le: '1' })).toBe(0)
      expect(m.value('pg_pool_lease_seconds_bucket', { route: '/leaky', le: '2.5' })).toBe(1)

      const http = 'pg_pool_http_request_duration_seconds_count'
      expect(m.value(http, { method: 'GET', route: '/work', status_class: '2xx' })).toBe(N)
      expect(m.value(http, { method: 'GET', route: '/work', status_class: '5xx' })).toBe(M)
      expect(m.value(http, { method: 'GET', route: '/work', status_class: 'aborted' })).toBe(K)
      expect(m.value(http, { method: 'GET', route: '/hold', status_class: '2xx' })).toBe(4)
      expect(m.value(http, { method: 'GET', route: 'unmatched', status_class: '4xx' })).toBe(2)
      // The scrapes themselves are not measured.
      expect(m.find(http, { route: '/metrics' })).toEqual([])

      // Gauges agree with the pool and with the server.
      expect(m.value('pg_pool_waiters')).toBe(0)
      expect(m.value('pg_pool_oldest_wait_seconds')).toBe(0)
      expect(m.value('pg_pool_connections', { state: 'leased' })).toBe(0)
      expect(m.value('pg_pool_connections', { state: 'idle' })).toBe(2)
      expect(m.value('pg_pool_connections_max')).toBe(2)
      expect(m.value('pg_pool_connections_opened_total')).toBe(2)
      expect(m.value('pg_pool_connection_errors_total')).toBe(0)
      const closed = m.find('pg_pool_connections_closed_total').reduce((sum, s) => sum + s.value, 0)
      expect(m.value('pg_pool_connections_opened_total') - closed).toBe(await db.countConnections(applicationName))
    } finally {
      await app.close()
    }
  })
})

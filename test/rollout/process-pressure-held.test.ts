import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'
import { codeOf, DELAY_SECONDS, sendOk } from './support.js'

// Held attacks from hostile probing (rollout): process pressure (@fastify/under-pressure through
// the backpressure plugin) with a heap threshold every sample exceeds, a deterministic stand-in
// for a process out of memory. packages/backpressure/README.md "Process pressure": the same
// exemptions as admission control (probes, /metrics, routes without a database, opted-out
// routes, unknown routes), 503 FST_PG_POOL_PROCESS_PRESSURE with Retry-After
// ceil(sampleInterval / 1000) clamped, counted as shed{reason="process"} on the route's pool.

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

describe('heap above maxHeapUsedBytes', () => {
  test('database routes get a coded 503 with delay-seconds and take no connection; exempt, opted-out and unknown routes answer; refusals counted as process', async () => {
    const server = Fastify()
    app = server
    await server.register(pgPool, {
      connection: db.url,
      pool: { max: 2, applicationName: uniqueName() },
      backpressure: { process: { maxHeapUsedBytes: 1, sampleInterval: 50 }, minRetryAfter: 2 },
    })
    server.get('/items', async (request) => (await request.db`select 1 as one`)[0])
    server.post('/items', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`select 1`
      return { ok: true }
    })
    server.get(
      '/webhook',
      { config: { backpressure: false } },
      async (request) => (await request.db`select 1 as one`)[0],
    )
    server.get('/nodb', { config: { db: false } }, async () => ({ ok: true }))
    const base = await listen(server)
    // The first sample (after sampleInterval) reads the heap.
    await waitUntil(
      () => (server as unknown as { memoryUsage(): { heapUsed: number } }).memoryUsage().heapUsed > 1,
      'a heap sample',
      5_000,
    )
    const acquiredBefore = parseExposition((await sendOk(`${base}/metrics`)).body).value('pg_pool_acquires_total', {
      pool: 'primary',
      result: 'ok',
    })

    const refusedRequests: [string, string][] = [
      ['GET', '/items'],
      ['HEAD', '/items'],
      ['POST', '/items'],
    ]
    for (const [method, path] of refusedRequests) {
      const answer = await sendOk(base + path, {
        method,
        ...(method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: '{"a":1}' } : {}),
      })
      expect(answer.status, `${method} ${path}`).toBe(503)
      // Retry-After: ceil(50 / 1000) = 1, raised to minRetryAfter.
      expect(String(answer.headers['retry-after'])).toMatch(DELAY_SECONDS)
      expect(answer.headers['retry-after']).toBe('2')
      if (method !== 'HEAD') {
        expect(JSON.parse(answer.body)).toEqual({
          statusCode: 503,
          code: 'FST_PG_POOL_PROCESS_PRESSURE',
          error: 'Service Unavailable',
          message: 'The server is under pressure (heapUsedBytes); retry later',
        })
      }
    }
    const served: [string, string, number][] = [
      ['GET', '/health/live', 200],
      ['HEAD', '/health/live', 200],
      ['GET', '/health/ready', 200],
      ['HEAD', '/health/ready', 200],
      ['GET', '/health', 200],
      ['GET', '/metrics', 200],
      ['HEAD', '/metrics', 200],
      ['GET', '/nodb', 200],
      ['GET', '/webhook', 200],
      ['GET', '/no/such/route', 404],
      ['OPTIONS', '/items', 404],
      ['DELETE', '/items', 404],
    ]
    for (const [method, path, status] of served) {
      const answer = await sendOk(base + path, { method })
      expect(answer.status, `${method} ${path}: ${answer.body.slice(0, 200)}`).toBe(status)
    }
    const m = parseExposition((await sendOk(`${base}/metrics`)).body)
    expect(m.value('pg_pool_requests_shed_total', { pool: 'primary', reason: 'process' })).toBe(refusedRequests.length)
    expect(m.value('pg_pool_requests_shed_total', { pool: 'primary', reason: 'queue_full' })).toBe(0)
    // Only the opted-out route took a connection.
    expect(m.value('pg_pool_acquires_total', { pool: 'primary', result: 'ok' })).toBe(acquiredBefore + 1)
    expect(server.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
  })

  test('a loop kept busy by a CPU-heavy handler: database routes refused as eventLoopDelay, probes and /metrics answer between the stalls', async () => {
    const server = Fastify()
    app = server
    await server.register(pgPool, {
      connection: db.url,
      pool: { max: 2, applicationName: uniqueName() },
      backpressure: { process: { maxEventLoopDelay: 100, sampleInterval: 100 } },
    })
    server.get('/items', async (request) => (await request.db`select 1 as one`)[0])
    // Busy-waits (no database: never refused, so it keeps the loop busy through the pressure).
    server.get('/busy', { config: { db: false } }, async () => {
      const until = performance.now() + 300
      while (performance.now() < until) {}
      return { ok: true }
    })
    const base = await listen(server)
    let busy = true
    const burner = (async () => {
      while (busy) await sendOk(`${base}/busy`)
    })()
    try {
      await waitUntil(
        () => (server as unknown as { isUnderPressure(): boolean }).isUnderPressure(),
        'the loop delay to be seen',
        10_000,
      )
      const items: string[] = []
      const probes: string[] = []
      for (let round = 0; round < 4; round++) {
        const answer = await sendOk(`${base}/items`)
        items.push(
          answer.status === 200 ? '200' : `${answer.status} ${codeOf(answer)} ${answer.headers['retry-after']}`,
        )
        // (/health/ready is left out: its ping is timed on the stalled loop, see
        // readiness-blames-database-for-stalls.test.ts.)
        for (const path of ['/health/live', '/metrics']) {
          probes.push(`${path} ${(await sendOk(base + path)).status}`)
        }
      }
      for (const item of items) expect(item).toMatch(/^(200|503 FST_PG_POOL_PROCESS_PRESSURE 1)$/)
      expect(items).toContain('503 FST_PG_POOL_PROCESS_PRESSURE 1')
      for (const probe of probes) expect(probe).toMatch(/ 200$/)
      const m = parseExposition((await sendOk(`${base}/metrics`)).body)
      expect(m.value('pg_pool_requests_shed_total', { pool: 'primary', reason: 'process' })).toBe(
        items.filter((item) => item !== '200').length,
      )
    } finally {
      busy = false
      await burner
    }
  })
})

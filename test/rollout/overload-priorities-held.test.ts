import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'
import { type Answer, codeOf, DELAY_SECONDS, send, sendOk } from './support.js'

// Held attacks from hostile probing (rollout): an open-loop overload of about 3x the pool's
// capacity with the three priorities mixed, on the umbrella with its defaults, while probes,
// /metrics, HEAD, OPTIONS and unknown routes are requested.
// packages/backpressure/README.md: low is refused first, high only at the cap; every refusal is
// a 503 with a computed Retry-After (whole seconds, within minRetryAfter..maxRetryAfter) and a
// coded body; /health and /metrics, routes without a database and unknown routes (404) are never
// refused; refusals are counted as pg_pool_requests_shed_total{pool,reason}. Metrics README: the
// gauges are read at scrape time. Health README: probes never take a pool connection.

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

const priorities = ['low', 'normal', 'high'] as const
type Priority = (typeof priorities)[number]

describe('3x overload with mixed priorities', () => {
  test('low is shed before high, high is never starved nor refused below the cap, probes and 404s answer, metrics add up and return to 0', async () => {
    const server = Fastify()
    app = server
    await server.register(pgPool, {
      connection: db.url,
      // Capacity: 2 connections / 50 ms = 40 requests per second.
      pool: { max: 2, applicationName: uniqueName() },
    })
    for (const priority of priorities) {
      server.get(`/${priority}`, { config: { backpressure: { priority } } }, async (request) => {
        await request.db`select pg_sleep(0.05)`
        return { priority }
      })
    }
    const base = await listen(server)
    // Warm: hold times known, connections open.
    for (let i = 0; i < 4; i++) expect((await sendOk(`${base}/normal`)).status).toBe(200)

    // Open loop: 120 requests per second (3x capacity) for 2 s, whatever the answers.
    const rate = 120
    const total = 240
    const answers: { priority: Priority; answer: Answer | string }[] = []
    const pending: Promise<void>[] = []
    const probes: { path: string; method: string; answer: Answer | string }[] = []
    let sending = true
    const probing = (async () => {
      const targets: [string, string][] = [
        ['GET', '/health/live'],
        ['HEAD', '/health/live'],
        ['GET', '/health/ready'],
        ['HEAD', '/health/ready'],
        ['GET', '/metrics'],
        ['GET', '/no/such/route'],
        ['OPTIONS', '/high'],
      ]
      while (sending) {
        for (const [method, path] of targets) probes.push({ path, method, answer: await send(base + path, { method }) })
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    })()
    const started = performance.now()
    for (let i = 0; i < total; i++) {
      const due = started + (i * 1000) / rate
      const wait = due - performance.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
      const priority = priorities[i % 3] as Priority
      pending.push(
        send(`${base}/${priority}`).then((answer) => {
          answers.push({ priority, answer })
        }),
      )
    }
    await Promise.all(pending)
    sending = false
    await probing

    // Every answer is a 200 or a coded 503 with delay-seconds within the default bounds 1..30.
    const tally: Record<string, number> = {}
    const ok: Record<Priority, number> = { low: 0, normal: 0, high: 0 }
    const refused: Record<Priority, number> = { low: 0, normal: 0, high: 0 }
    for (const { priority, answer } of answers) {
      if (typeof answer === 'string') throw new Error(`/${priority}: ${answer}`)
      const key = answer.status === 200 ? '200' : `${answer.status} ${codeOf(answer)}`
      tally[key] = (tally[key] ?? 0) + 1
      if (answer.status === 200) {
        ok[priority]++
        continue
      }
      refused[priority]++
      expect(answer.status, answer.body).toBe(503)
      expect(['FST_PG_POOL_QUEUE_FULL', 'FST_PG_POOL_OVERLOADED', 'FST_PG_POOL_ACQUIRE_TIMEOUT']).toContain(
        codeOf(answer),
      )
      const retryAfter = String(answer.headers['retry-after'])
      expect(retryAfter).toMatch(DELAY_SECONDS)
      expect(Number(retryAfter)).toBeGreaterThanOrEqual(1)
      expect(Number(retryAfter)).toBeLessThanOrEqual(30)
      if (priority === 'high') expect(codeOf(answer)).not.toBe('FST_PG_POOL_OVERLOADED')
    }
    console.log(`[probe-rollout] overload: ${JSON.stringify(tally)} ok ${JSON.stringify(ok)}`)
    expect(answers.length).toBe(total)
    // An overload happened, low paid for it first, high was served.
    expect(refused.low + refused.normal + refused.high).toBeGreaterThan(0)
    expect(refused.low).toBeGreaterThanOrEqual(refused.high)
    expect(ok.high).toBeGreaterThan(0)
    expect(ok.high).toBeGreaterThanOrEqual(ok.low)

    // Probes, /metrics, HEAD, OPTIONS and unknown routes answered throughout, never refused.
    expect(probes.length).toBeGreaterThan(0)
    for (const { path, method, answer } of probes) {
      if (typeof answer === 'string') throw new Error(`${method} ${path}: ${answer}`)
      const label = `${method} ${path}: ${answer.status} ${answer.body.slice(0, 200)}`
      if (path === '/no/such/route' || method === 'OPTIONS') expect(answer.status, label).toBe(404)
      else if (path === '/health/ready') {
        // Readiness may fail while the queue is at its cap (health README), in health+json.
        expect([200, 503], label).toContain(answer.status)
        expect(String(answer.headers['content-type'])).toMatch(/^application\/health\+json/)
      } else expect(answer.status, label).toBe(200)
      expect(codeOf(answer) ?? '', label).not.toMatch(/^FST_PG_POOL_/)
    }

    // Back to idle: the gauges read 0, the counters add up to the answers.
    await waitUntil(() => server.pgPool.stats().leased === 0 && server.pgPool.stats().waiting === 0, 'idle', 10_000)
    const m = parseExposition((await sendOk(`${base}/metrics`)).body)
    const pool = { pool: 'primary' }
    expect(m.value('pg_pool_waiters', pool)).toBe(0)
    expect(m.value('pg_pool_oldest_wait_seconds', pool)).toBe(0)
    expect(m.value('pg_pool_connections', { ...pool, state: 'leased' })).toBe(0)
    expect(m.value('pg_pool_connections', { ...pool, state: 'connecting' })).toBe(0)
    expect(m.value('pg_pool_pipelined_requests', pool)).toBe(0)
    const count = (code: string) => tally[`503 ${code}`] ?? 0
    expect(
      m.value('pg_pool_requests_shed_total', { ...pool, reason: 'queue_full' }) +
        m.value('pg_pool_acquires_total', { ...pool, result: 'rejected' }),
    ).toBe(count('FST_PG_POOL_QUEUE_FULL'))
    expect(m.value('pg_pool_requests_shed_total', { ...pool, reason: 'queue_delay' })).toBe(
      count('FST_PG_POOL_OVERLOADED'),
    )
    expect(m.value('pg_pool_requests_shed_total', { ...pool, reason: 'process' })).toBe(0)
    expect(m.value('pg_pool_acquires_total', { ...pool, result: 'timeout' })).toBe(count('FST_PG_POOL_ACQUIRE_TIMEOUT'))
    // Only the requests served took a connection: probes, 404s and refusals took none.
    expect(m.value('pg_pool_acquires_total', { ...pool, result: 'ok' })).toBe(4 + (tally['200'] ?? 0))
    const unmatched = probes.filter((p) => p.path === '/no/such/route' || p.method === 'OPTIONS').length
    expect(
      m
        .find('pg_pool_http_request_duration_seconds_count', { route: 'unmatched', status_class: '4xx' })
        .reduce((sum, sample) => sum + sample.value, 0),
    ).toBe(unmatched)
  }, 60_000)
})

import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'

// Held attacks from hostile probing (round 8, remote clients): a flood against the umbrella app (health, metrics, backpressure on).
// packages/backpressure/README.md: refused "503, a `Retry-After` computed from how fast the queue
// drains, and a small coded JSON body"; core README: bodies say what a client may know (no host,
// port, user, SQL or parameter). RFC 9110: Retry-After is an HTTP-date or delay-seconds (1*DIGIT).

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

const SECRET_PARAM = 'zz-param-value-of-the-client'

describe('a flood of requests', () => {
  test('every answer a 200 or a coded 503 with delay-seconds; no 500; nothing internal in bodies; probes answer', async () => {
    const server = Fastify()
    await server.register(pgPool, { connection: db.url, pool: { max: 2, acquireTimeout: 1_500, maxWaiting: 8 } })
    server.get('/slow/:v', async (request) => {
      const [row] = await request.db`select pg_sleep(0.05), ${(request.params as { v: string }).v}::text as v`
      return { v: row?.v }
    })
    server.post('/slow-tx', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`select pg_sleep(0.05), ${SECRET_PARAM}::text`
      return { ok: true }
    })
    app = server
    const base = await listen(server)
    const port = new URL(base).port
    const answers = await Promise.all(
      Array.from({ length: 120 }, async (_, i) => {
        const response =
          i % 3 === 0
            ? await fetch(`${base}/slow-tx`, {
                method: 'POST',
                headers: { 'content-type': 'application/json', accept: 'text/html' },
                body: JSON.stringify({ p: SECRET_PARAM }),
              })
            : await fetch(`${base}/slow/${SECRET_PARAM}-${i}`, { headers: { accept: 'application/xml' } })
        return { status: response.status, retryAfter: response.headers.get('retry-after'), body: await response.text() }
      }),
    )
    // Probes during the tail of the flood.
    const health = await fetch(`${base}/health/live`)
    const metrics = await fetch(`${base}/metrics`)
    expect([health.status, metrics.status]).toEqual([200, 200])
    const refused = answers.filter((a) => a.status !== 200)
    expect(answers.filter((a) => a.status !== 200 && a.status !== 503)).toEqual([])
    expect(refused.length).toBeGreaterThan(0)
    for (const answer of refused) {
      expect(answer.retryAfter ?? '', answer.body).toMatch(/^[0-9]+$/)
      const body = JSON.parse(answer.body) as Record<string, unknown>
      expect(Object.keys(body).sort()).toEqual(['code', 'error', 'message', 'statusCode'])
      expect(String(body.code)).toMatch(/^FST_PG_POOL_/)
      for (const leak of [SECRET_PARAM, '127.0.0.1', 'localhost', port, 'postgres', 'pg_sleep', 'select']) {
        expect(answer.body).not.toContain(leak)
      }
    }
    await waitUntil(() => server.pgPool.stats().leased === 0 && server.pgPool.stats().waiting === 0, 'idle', 10_000)
  })
})

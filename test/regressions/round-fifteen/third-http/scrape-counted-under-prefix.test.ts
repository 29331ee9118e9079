// What the user does: registers the metrics plugin inside an encapsulated plugin that Fastify
// prefixes (`app.register(async (internal) => internal.register(pgPoolMetrics), { prefix:
// '/internal' })`), so the scrape route is /internal/metrics, and Prometheus scrapes it.
// What they should get: as the metrics README says, the route's own requests are not counted in
// the HTTP histogram (a scrape every 15 s would otherwise be most of a quiet service's traffic,
// and its latency panel).
// What they got: the scrape is counted under route="/internal/metrics": the histogram leaves out
// only requests whose route is the `path` option as written, not the route Fastify registered.
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../../../metrics/exposition.js'
import { coreApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

test('scrapes of a metrics route under a Fastify prefix are not in the HTTP histogram', async () => {
  const { app } = await coreApp(db.url, { max: 1 })
  await app.register(
    async (internal) => {
      await internal.register(pgPoolMetrics)
      internal.get('/status', { config: { db: false } }, async () => ({ ok: true }))
    },
    { prefix: '/internal' },
  )
  try {
    expect((await app.inject('/internal/status')).statusCode).toBe(200)
    expect((await app.inject('/internal/metrics')).statusCode).toBe(200)
    const m = parseExposition((await app.inject('/internal/metrics')).body)
    const routes = m.find('pg_pool_http_request_duration_seconds_count').map((series) => series.labels.route)
    expect(routes).toEqual(['/internal/status'])
  } finally {
    await app.close()
  }
})

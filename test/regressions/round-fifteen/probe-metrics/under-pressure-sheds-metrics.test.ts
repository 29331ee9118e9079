// Round fifteen (metrics probe). What the user does: registers @fastify/under-pressure on their
// own (the backpressure README's alternative: `process: false` and under-pressure registered by
// the app), beside the core and the metrics plugin, and scrapes /metrics with Prometheus.
// What they should get: /metrics answers while the process is under pressure, as the health
// probes do (their routes carry a pressureHandler that lets them through): the operator needs
// the pool's numbers exactly then, and a scrape never touches the database.
// What they got: /metrics answered 503 for as long as the pressure lasted: the scrape failed,
// `up` went to 0 and every pool series went stale at the moment of the incident.
import { createRequire } from 'node:module'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import type { FastifyPluginAsync } from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../../../metrics/exposition.js'
import { coreApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../../support/database.js'

// The copy the backpressure package depends on (the workspace root has none of its own).
const underPressurePath = createRequire(import.meta.resolve('@fastify-pg-pool/backpressure')).resolve(
  '@fastify/under-pressure',
)

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

test('@fastify/under-pressure registered by the app refuses its routes, not /metrics', async () => {
  const underPressure = ((await import(underPressurePath)) as { default: FastifyPluginAsync<Record<string, unknown>> })
    .default
  const { app } = await coreApp(db.url, { max: 2 })
  await app.register(pgPoolMetrics)
  // An external dependency reported down: under pressure from the first check on, for good.
  await app.register(underPressure, { healthCheck: async () => false, healthCheckInterval: 60_000 })
  app.get('/work', async (request) => (await request.db`select 1 as one`)[0])
  try {
    await app.ready()
    const isUnderPressure = (app as unknown as { isUnderPressure(): boolean }).isUnderPressure.bind(app)
    await waitUntil(isUnderPressure, 'under pressure')
    expect((await app.inject('/work')).statusCode).toBe(503)
    const scrape = await app.inject('/metrics')
    expect(scrape.statusCode).toBe(200)
    expect(parseExposition(scrape.body).value('pg_pool_connections_max', { pool: 'primary' })).toBe(2)
    const open = await app.inject({
      url: '/metrics',
      headers: { accept: 'application/openmetrics-text; version=1.0.0' },
    })
    expect(open.statusCode).toBe(200)
    expect(open.body.endsWith('# EOF\n')).toBe(true)
  } finally {
    await app.close()
  }
})

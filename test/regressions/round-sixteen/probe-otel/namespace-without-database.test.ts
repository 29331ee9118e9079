// Round sixteen (otel probe): DATABASE_URL without a database (`postgres://app:pw@db:5432`, as
// many compose files have it): PostgreSQL (and postgres.js) then connect to the database named
// after the user. Every statement span and every `db.client.operation.duration` series said
// `db.namespace: ""` (the README: "`db.namespace` is the database the pool connects to"), and
// `app.pgPool.endpoint.database` (documented as where the pool connects, for tracing) was ''.
// What the user should see: the database the statements run in.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel, { ATTR, METRIC } from '@fastify-pg-pool/otel'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

test('a URL naming no database: db.namespace is the one connected to (the user’s name)', async () => {
  const url = new URL(db.url)
  url.pathname = ''
  const app = Fastify()
  await app.register(pgPoolCore, { connection: url.toString(), pool: { max: 1 } })
  await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
  app.get('/where', async (request) => (await request.db<{ d: string }[]>`select current_database() as d`)[0])
  try {
    const { d } = (await app.inject('/where')).json<{ d: string }>()
    expect(d).toBe(decodeURIComponent(url.username))
    const span = sdk.spans().find((s) => s.name === 'select')
    let metricNamespaces: unknown[] = []
    for (const scope of (await sdk.collect()).scopeMetrics) {
      for (const metric of scope.metrics) {
        if (metric.descriptor.name === METRIC.operationDuration) {
          metricNamespaces = metric.dataPoints.map((p) => p.attributes[ATTR.dbNamespace])
        }
      }
    }
    expect({
      endpoint: app.pgPool.endpoint.database,
      span: span?.attributes[ATTR.dbNamespace],
      metric: metricNamespaces,
    }).toEqual({ endpoint: d, span: d, metric: [d] })
  } finally {
    await app.close()
  }
})

// Round fourteen (observability probe): two Fastify apps in one process (an API and an admin
// server, say) on the same DATABASE_URL, both with pgPoolOtel and the one global SDK. Both
// primaries get the default pool name `host:port/db`, and each app's batch callback observes
// `db.client.connection.count`, `.max`, `.pending_requests` with the same attributes: the
// SDK keeps one of the two observations, so the series tells one app's pool, not both.
import { METRIC } from '@fastify-pg-pool/otel'
import type { MetricData, ResourceMetrics } from '@opentelemetry/sdk-metrics'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { closeGate, createTables, type OtelApp, otelApp } from '../../../otel/helpers.js'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../../support/database.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  await createTables(db)
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

function points(collected: ResourceMetrics, name: string): MetricData['dataPoints'] {
  for (const scope of collected.scopeMetrics) {
    for (const metric of scope.metrics) if (metric.descriptor.name === name) return metric.dataPoints
  }
  return []
}

test('two apps on one database: the pool metrics count both pools, not the last observed', async () => {
  const apps: OtelApp[] = []
  const gate = await closeGate(db)
  try {
    for (let i = 0; i < 2; i++) {
      apps.push(await otelApp(db.url, { pool: { max: 2 }, otel: { meterProvider: sdk.meterProvider, traces: false } }))
    }
    const [a] = apps as [OtelApp, OtelApp]
    // App a holds one connection (its request waits on the gate); app b holds none.
    const holding = a.app.inject('/gate')
    await waitUntil(() => a.app.pgPool.stats().leased === 1, 'app a to hold a connection')
    const collected = await sdk.collect()
    const used = points(collected, METRIC.connectionCount).filter(
      (p) => p.attributes['db.client.connection.state'] === 'used',
    )
    const max = points(collected, METRIC.max)
    // Either one series per pool (told apart by name) or one summed: never one pool's alone.
    expect({
      used: used.reduce((sum, p) => sum + Number(p.value), 0),
      max: max.reduce((sum, p) => sum + Number(p.value), 0),
    }).toEqual({ used: 1, max: 4 })
    await gate.open()
    await holding
  } finally {
    await gate.open().catch(() => {})
    await Promise.all(apps.map(({ app }) => app.close()))
  }
})

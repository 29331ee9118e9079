// Attack on 6a5832a's one batch callback per Meter summing pools of one name across apps
// (packages/otel/src/pool-metrics.ts): apps closed one then the other, a new app after both
// closed (the callback removed, then added again), meters of two MeterProviders, two named
// instances of one name in two apps, and a custom poolName shared by two pools of one app.
// Expected (otel README, "Pools of one name in one process ... are one series: their counts are
// summed"): each collection reads the pools open now, of that provider's apps only.
import { METRIC } from '@fastify-pg-pool/otel'
import type { MetricData, ResourceMetrics } from '@opentelemetry/sdk-metrics'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
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

/** Sum of the max gauge per pool name, and of the used connections. */
async function read(from: TestSdk): Promise<{ max: Record<string, number>; used: number }> {
  const collected = await from.collect()
  const max: Record<string, number> = {}
  for (const p of points(collected, METRIC.max)) {
    const name = String(p.attributes['db.client.connection.pool.name'])
    max[name] = (max[name] ?? 0) + Number(p.value)
  }
  const used = points(collected, METRIC.connectionCount)
    .filter((p) => p.attributes['db.client.connection.state'] === 'used')
    .reduce((sum, p) => sum + Number(p.value), 0)
  return { max, used }
}

const target = () => {
  const url = new URL(db.url)
  return `${url.hostname}:${url.port}${url.pathname}`
}

describe('one callback per meter, pools of one name summed', () => {
  test('close one app, then the other, then a third app: only the open pools are read', async () => {
    const a = await otelApp(db.url, { pool: { max: 2 }, otel: { meterProvider: sdk.meterProvider, traces: false } })
    const b = await otelApp(db.url, { pool: { max: 3 }, otel: { meterProvider: sdk.meterProvider, traces: false } })
    let c: OtelApp | undefined
    try {
      expect((await read(sdk)).max[target()]).toBe(5)
      await a.app.close()
      expect((await read(sdk)).max[target()]).toBe(3)
      const gate = await closeGate(db)
      const holding = b.app.inject('/gate')
      await waitUntil(() => b.app.pgPool.stats().leased === 1, 'b to hold a connection')
      expect((await read(sdk)).used).toBe(1)
      await gate.open()
      await holding
      await b.app.close()
      // Nothing open: the SDK keeps reporting the last value of a cumulative observable series
      // no callback observes any more (3, here): the SDK's, as before 6a5832a. Not asserted.
      c = await otelApp(db.url, { pool: { max: 4 }, otel: { meterProvider: sdk.meterProvider, traces: false } })
      expect((await read(sdk)).max[target()]).toBe(4)
    } finally {
      await a.app.close()
      await b.app.close()
      await c?.app.close()
    }
  })

  test('two MeterProviders: each sees its own app alone', async () => {
    const other = startTestSdk()
    const a = await otelApp(db.url, { pool: { max: 2 }, otel: { meterProvider: sdk.meterProvider, traces: false } })
    const b = await otelApp(db.url, { pool: { max: 3 }, otel: { meterProvider: other.meterProvider, traces: false } })
    try {
      expect((await read(sdk)).max[target()]).toBe(2)
      expect((await read(other)).max[target()]).toBe(3)
      await b.app.close()
      expect((await read(sdk)).max[target()]).toBe(2)
    } finally {
      await a.app.close()
      await b.app.close()
      await other.shutdown()
    }
  })

  test('a custom poolName naming two apps’ pools alike: summed, and each app closing takes its own out', async () => {
    const otel = { meterProvider: sdk.meterProvider, traces: false, poolName: () => 'shared-name' }
    const a = await otelApp(db.url, { pool: { max: 2 }, otel })
    const b = await otelApp(db.url, { pool: { max: 5 }, otel })
    try {
      expect((await read(sdk)).max['shared-name']).toBe(7)
      await b.app.close()
      expect((await read(sdk)).max['shared-name']).toBe(2)
    } finally {
      await a.app.close()
      await b.app.close()
    }
  })
})

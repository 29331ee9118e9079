// Round eleven of hostile probing, held (OpenTelemetry probe): the pool gauges agree with stats() and with pg_stat_activity: during load
// (used = leased, pending_requests = waiting), after load (idle = open = server backends), after
// the server terminated every idle backend (idle falls to 0 with the housekeeping pass, as the
// server shows 0), and after a used connection was killed (no used left over).
import { METRIC } from '@fastify-pg-pool/otel'
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../../support/database.js'
import { closeGate, createTables, otelApp } from '../helpers.js'
import { startTestSdk, type TestSdk } from '../sdk.js'

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

async function gauges(): Promise<{ idle: number; used: number; pending: number }> {
  const collected: ResourceMetrics = await sdk.collect()
  const out = { idle: -1, used: -1, pending: -1 }
  for (const scope of collected.scopeMetrics) {
    if (scope.scope.name !== '@fastify-pg-pool/otel') continue
    for (const m of scope.metrics) {
      for (const p of m.dataPoints) {
        if (m.descriptor.name === METRIC.connectionCount) {
          if (p.attributes['db.client.connection.state'] === 'idle') out.idle = p.value as number
          if (p.attributes['db.client.connection.state'] === 'used') out.used = p.value as number
        }
        if (m.descriptor.name === METRIC.pendingRequests) out.pending = p.value as number
      }
    }
  }
  return out
}

test('gauges follow stats() and the server through load and kills', async () => {
  const { app, applicationName } = await otelApp(db.url, {
    pool: { max: 3, maxWaiting: 50, acquireTimeout: 10_000, idleTimeout: 0 },
    otel: { meterProvider: sdk.meterProvider, tracerProvider: sdk.tracerProvider },
  })
  const backends = () => db.countConnections(applicationName)
  try {
    let gate = await closeGate(db)
    const load = Array.from({ length: 8 }, () => app.inject('/gate'))
    await waitUntil(
      () => app.pgPool.stats().leased === 3 && app.pgPool.stats().waiting === 5,
      'three held, five waiting',
      10_000,
    )
    expect(await gauges()).toEqual({ idle: 0, used: 3, pending: 5 })
    expect(await backends()).toBe(3)
    await gate.open()
    expect((await Promise.all(load)).map((r) => r.statusCode)).toEqual(Array(8).fill(200))
    await waitUntil(() => app.pgPool.stats().leased === 0, 'leases back')
    expect(await gauges()).toEqual({ idle: app.pgPool.stats().open, used: 0, pending: 0 })
    expect(await backends()).toBe(app.pgPool.stats().open)

    // The server ends every idle backend: the gauge follows within a housekeeping pass.
    await db.terminate(applicationName)
    await waitUntil(async () => (await backends()) === 0, 'backends gone')
    expect(await waitFor(async () => (await gauges()).idle === 0, 5_000)).toBe(true)
    expect(await gauges()).toEqual({ idle: 0, used: 0, pending: 0 })

    // A used connection killed mid-statement: nothing stays used.
    gate = await closeGate(db)
    const held = app.inject('/gate')
    await waitUntil(async () => (await db.running(applicationName, '%from gate%')) === 1, 'the statement runs', 5_000)
    await db.terminate(applicationName)
    expect((await held).statusCode).toBe(503)
    await gate.open()
    await waitUntil(() => app.pgPool.stats().leased === 0, 'lease back')
    const after = await gauges()
    expect(after.used).toBe(0)
    expect(after.idle).toBe(app.pgPool.stats().idle)
    expect(await waitFor(async () => (await backends()) === app.pgPool.stats().open, 3_000)).toBe(true)
  } finally {
    await app.close()
  }
})

// Round eleven of hostile probing, fixed (found by the OpenTelemetry probe, docs vs behaviour): the README's span table says an `acquire connection`
// span carries on failure `error.type` "FST_PG_POOL_ACQUIRE_TIMEOUT, ..._QUEUE_FULL,
// ..._ABORTED, ..." (and the core's AcquireMessage.error lists "queue full"). A request the pool
// refuses because its queue is full (503 FST_PG_POOL_QUEUE_FULL, no admission-control plugin)
// leaves no span, event or attribute of this plugin at all: Pool.wait (packages/core/src/pool.ts:259-261)
// throws before it publishes acquireStart, so an acquire span with error.type
// FST_PG_POOL_QUEUE_FULL never exists. Either the refusal gets its span (or the refusal event the
// backpressure plugin's refusals get), or the README must stop listing it.
import { ATTR, SPAN } from '@fastify-pg-pool/otel'
import { SpanStatusCode } from '@opentelemetry/api'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../support/database.js'
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

test('a request refused with FST_PG_POOL_QUEUE_FULL: an acquire connection span with that error.type', async () => {
  const { app } = await otelApp(db.url, {
    pool: { max: 1, maxWaiting: 1 },
    fastifyOtel: sdk.tracerProvider,
    otel: { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider },
  })
  try {
    const gate = await closeGate(db)
    const holder = app.inject('/gate')
    await waitUntil(() => app.pgPool.stats().leased === 1, '/gate to hold the connection')
    const waiter = app.inject('/item/1')
    await waitUntil(() => app.pgPool.stats().waiting === 1, 'one waiter: the queue is full')
    const refused = await app.inject('/item/2')
    expect(refused.statusCode).toBe(503)
    expect(refused.json().code).toBe('FST_PG_POOL_QUEUE_FULL')
    await gate.open()
    await Promise.all([holder, waiter])
    const refusedAcquires = sdk
      .spans()
      .filter((s) => s.name === SPAN.acquire && s.attributes[ATTR.errorType] === 'FST_PG_POOL_QUEUE_FULL')
    expect(refusedAcquires.map((s) => [s.attributes[ATTR.route], s.status.code])).toEqual([
      ['/item/:id', SpanStatusCode.ERROR],
    ])
  } finally {
    await app.close()
  }
})

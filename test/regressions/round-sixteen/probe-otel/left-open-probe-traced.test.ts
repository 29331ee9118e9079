// Round sixteen (otel probe): a request whose SQL may have left a transaction block open (several
// statements in one unsafe() message, a BEGIN or COMMIT of its own) makes the pool ask the server,
// before the reply, whether a block is open (lease.ts leftBlockOpen). That question of the pool's
// was traced as a statement of the request: an extra `SELECT` span in every such request's trace,
// counted in `db.client.operation.duration`, and in a failed block (the request's `begin; select
// 1/0`) an error span and series with error.type 25P02 for a statement the app never sent. The
// pool's other questions (#checkBlock, the shared-session probe) are left out for that reason.
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

test('the pool asking whether a block was left open is no statement of the request', async () => {
  const app = Fastify()
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 1 } })
  await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
  app.get('/several', async (request) => {
    await request.db.unsafe('select 1 as a; select 2 as b')
    return { ok: true }
  })
  app.get('/failed-block', async (request) => {
    await request.db.unsafe('begin; select 1/0').catch(() => {})
    return { ok: true }
  })
  try {
    await app.inject('/several')
    await app.inject('/failed-block')
    const names = sdk.spans().map((s) => s.name)
    let errorTypes: unknown[] = []
    for (const scope of (await sdk.collect()).scopeMetrics) {
      for (const metric of scope.metrics) {
        if (metric.descriptor.name === METRIC.operationDuration) {
          errorTypes = metric.dataPoints.map((p) => p.attributes[ATTR.errorType]).filter((t) => t !== undefined)
        }
      }
    }
    // The app's two statements: the second failed with 22012 (division by zero), nothing else.
    expect({ names, errorTypes }).toEqual({ names: ['select select', 'begin select'], errorTypes: ['22012'] })
  } finally {
    await app.close()
  }
})

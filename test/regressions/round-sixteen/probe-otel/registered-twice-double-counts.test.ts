// Round sixteen (otel probe): the plugin registered in two encapsulated contexts (an
// "observability" plugin of one team and a routes plugin of another, each registering
// pgPoolOtel next to its routes). Fastify lets both register: each decorates its own context.
// Both then instrumented the same pools: every statement had two CLIENT spans in the trace, the
// operation histogram counted each statement twice, and `db.client.connection.max` said 6 for a
// pool of max 3 (the batch callback summed the pool once per registration). A pool is
// instrumented once: the second registration is refused at register, naming the pool.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel, { METRIC } from '@fastify-pg-pool/otel'
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  sdk = startTestSdk({ global: true })
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

function maxPoints(collected: ResourceMetrics): number[] {
  const values: number[] = []
  for (const scope of collected.scopeMetrics) {
    for (const metric of scope.metrics) {
      if (metric.descriptor.name === METRIC.max) for (const point of metric.dataPoints) values.push(Number(point.value))
    }
  }
  return values
}

test('registered in two sibling contexts: refused at register, never two spans per statement', async () => {
  const app = Fastify()
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 3 } })
  app.register(async (child) => {
    await child.register(pgPoolOtel)
    child.get('/a', async (request) => (await request.db`select 1 as one`)[0])
  })
  app.register(async (child) => {
    await child.register(pgPoolOtel)
  })
  let refused: unknown
  try {
    await app.ready()
  } catch (error) {
    refused = error
  }
  if (refused === undefined) {
    // What the user saw: the statement twice in the trace, the pool's max doubled.
    sdk.reset()
    await app.inject('/a')
    const statementSpans = sdk
      .spans()
      .filter((s) => s.instrumentationScope.name === '@fastify-pg-pool/otel' && s.name === 'select')
    const collected = await sdk.collect()
    await app.close()
    expect({ statementSpans: statementSpans.length, max: maxPoints(collected) }).toEqual({
      statementSpans: 1,
      max: [3],
    })
  }
  expect(refused).toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
  expect(String((refused as Error).message)).toContain('instrumented already')
  await app.close().catch(() => {})
})

test('one registration per app, app after app in one process: each instruments its own pool', async () => {
  for (let i = 0; i < 2; i++) {
    const app = Fastify()
    await app.register(pgPoolCore, { connection: db.url, pool: { max: 3 } })
    await app.register(pgPoolOtel)
    await app.ready()
    expect(app.pgPoolOtel.poolNames).toHaveLength(1)
    await app.close()
  }
})

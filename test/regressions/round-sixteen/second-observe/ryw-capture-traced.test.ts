// Round sixteen (second observability probe). With read-your-writes on (`replica.readYourWrites`),
// a request that wrote makes the pool ask the primary for its WAL position when the lease comes
// back (`SELECT pg_catalog.pg_current_wal_insert_lsn()`, the token's position). That question of
// the pool's was traced as a statement of the request: every writing request's trace had an
// extra `SELECT` CLIENT span after its INSERT, and db.client.operation.duration counted a
// `SELECT` per write (a dashboard of reads per second counted every write as a read too). This
// round the pool's other question before the reply (whether a block was left open) was taken
// out of tracing for that reason (probe-otel/left-open-probe-traced); this one is the same.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel, { ATTR, METRIC } from '@fastify-pg-pool/otel'
import Fastify from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  const sql = postgres(db.url, { max: 1, onnotice: () => {} })
  await sql`create table ryw_traced (id int)`
  await sql.end({ timeout: 1 })
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

test('the WAL position read for a read-your-writes token is no statement of the request', async () => {
  const app = Fastify()
  await app.register(pgPoolCore, {
    connection: db.url,
    // The same server as its "replica": only the token's capture matters here.
    replicas: [db.url],
    replica: { readYourWrites: { secret: 'a-secret-of-at-least-32-characters!!' } },
    pool: { max: 2 },
  })
  await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
  app.post('/write', async (request) => {
    await request.db`insert into ryw_traced values (1)`
    return { ok: true }
  })
  try {
    const reply = await app.inject({ method: 'POST', url: '/write' })
    expect(reply.statusCode).toBe(200)
    // The capture did happen: the reply carries the token.
    expect(reply.headers['x-pg-read-after']).toBeDefined()
    const names = sdk.spans().map((s) => s.name)
    const operations: unknown[] = []
    for (const scope of (await sdk.collect()).scopeMetrics) {
      for (const metric of scope.metrics) {
        if (metric.descriptor.name === METRIC.operationDuration) {
          for (const point of metric.dataPoints) operations.push(point.attributes[ATTR.dbQuerySummary])
        }
      }
    }
    expect({ names, operations }).toEqual({ names: ['insert ryw_traced'], operations: ['insert ryw_traced'] })
  } finally {
    await app.close()
  }
})

// Round fourteen (observability probe): the pool's own questions to the server get no span. The
// route-transaction check (#checkBlock) is left out on purpose (lease.ts #send: "no statement of
// the request's: in a failed block it fails (25P02), which tracing and metrics would count"); the
// same question asked of a pipelined route's shared session after a message of several
// statements (#probeSharedBlock) was traced as a statement of the request.
import pgPoolOtel from '@fastify-pg-pool/otel'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { coreApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../../support/database.js'
import { tracedProvider } from './kit.js'

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

test('a pipelined route sending two statements in one message: spans of its statements only', async () => {
  const traced = tracedProvider()
  const { app } = await coreApp(db.url, { max: 1 })
  await app.register(pgPoolOtel, { tracerProvider: traced.provider, queryText: true, metrics: false })
  app.get('/two', { config: { db: { pipeline: true } } }, async (request) => {
    await request.db.unsafe('select 1 as a; select 2 as b')
    return { ok: true }
  })
  app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
    await request.db.unsafe('select 1 as a; select 2 as b')
    return { ok: true }
  })
  try {
    expect((await app.inject('/two')).statusCode).toBe(200)
    expect((await app.inject({ method: 'POST', url: '/tx' })).statusCode).toBe(200)
    await waitUntil(() => app.pgPool.stats().leased === 0, 'leases back')
  } finally {
    await app.close()
  }
  const texts = traced.ours().map((s) => s.attributes['db.query.text'])
  // The route transaction's own check is not traced: neither should the pipelined one be.
  expect(texts.filter((t) => String(t).includes('statement_timestamp'))).toEqual([])
})

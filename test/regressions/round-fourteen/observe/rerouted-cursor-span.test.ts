// Round fourteen (observability probe): a lease whose first statement is a cursor, forEach or
// stream, rerouted because the session reset of the previous holder failed (it prepared a
// statement of its own). The statement is refused (it cannot be resent), but its span
// must end, with an error, like every other statement's.
import pgPoolOtel from '@fastify-pg-pool/otel'
import { SpanStatusCode } from '@opentelemetry/api'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { coreApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../../../support/database.js'
import { tracedProvider } from './kit.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe('create table t (v int); insert into t select i from generate_series(1, 50) i')
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

for (const form of ['cursor', 'forEach'] as const) {
  test(`a rerouted ${form} statement's span ends (error), not left open`, async () => {
    const traced = tracedProvider()
    const { app } = await coreApp(db.url, { max: 1 })
    await app.register(pgPoolOtel, { tracerProvider: traced.provider, metrics: false })
    const resetErrors: number[] = []
    app.pgPool.on('resetError', () => void resetErrors.push(1))
    app.get('/prepare', async (request) => {
      await request.db.unsafe('prepare mine as select 1')
      return { ok: true }
    })
    app.get('/next', async (request) => {
      let n = 0
      if (form === 'cursor') {
        for await (const rows of request.db`select v from t where v > ${0}`.cursor(10)) n += rows.length
      } else {
        await request.db`select v from t where v > ${0}`.forEach(() => {
          n++
        })
      }
      return { n }
    })
    try {
      expect((await app.inject('/prepare')).statusCode).toBe(200)
      const next = await app.inject('/next')
      await waitUntil(() => app.pgPool.stats().leased === 0, 'lease back', 10_000)
      expect(resetErrors).toHaveLength(1)
      // Whatever the request got (refused, 503), every statement span started has ended.
      await waitFor(() => traced.tracking.open.size === 0, 3_000)
      expect({ status: next.statusCode, open: [...traced.tracking.open.values()] }).toEqual({
        status: next.statusCode,
        open: [],
      })
      const selects = traced.ours().filter((s) => s.name === 'select t')
      expect(selects.length).toBeGreaterThanOrEqual(1)
      if (next.statusCode !== 200) expect(selects.some((s) => s.status.code === SpanStatusCode.ERROR)).toBe(true)
    } finally {
      await app.close()
    }
    // Still open after close: never exported.
    expect([...traced.tracking.open.values()]).toEqual([])
  })
}

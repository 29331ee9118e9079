// Round sixteen (otel probe): a route transaction handed a connection whose session reset then
// failed (the previous holder left a prepared statement) is rerouted: its BEGIN and first
// statement, queued behind the reset, go again on another connection. When none comes in time
// (acquireTimeout: the only one is busy), the request gets its 503, and in the trace the
// `transaction` span, its BEGIN and its statement were never ended: left open for the life of the
// process (the BEGIN and statement spans even after app.close(); the transaction span until it,
// with no outcome). Exporters never see them, and each such request leaks them in memory.
// What the user should see: the three spans ended with the request, the transaction `rollback`,
// the statements with their error.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel, { ATTR } from '@fastify-pg-pool/otel'
import { context, SpanStatusCode } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { closeGate, createTables } from '../../../otel/helpers.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../../../support/database.js'
import { tracedProvider } from '../../round-fourteen/observe/kit.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
  await createTables(db)
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
})
afterAll(async () => {
  context.disable()
  await db.drop()
})

test('a route transaction rerouted by a failed reset, then timed out waiting: its spans end with its 503', async () => {
  const traced = tracedProvider()
  const app = Fastify()
  const applicationName = uniqueName('rrtx')
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 1, applicationName, acquireTimeout: 1500 } })
  await app.register(pgPoolOtel, { tracerProvider: traced.provider, metrics: false })
  app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`update items set stock = stock where id = 1`
    return { ok: true }
  })
  app.get('/gate', async (request) => (await request.db`select count(*)::int as n from gate`)[0])
  const resetErrors: unknown[] = []
  app.pgPool.on('resetError', (e) => void resetErrors.push(e))
  await app.ready()
  const gate = await closeGate(db)
  try {
    // The warm-up connection goes: the lease below opens the one that is handed on.
    await db.terminate(applicationName)
    await waitUntil(() => app.pgPool.stats().open === 0, 'the warm-up connection to close')
    const holder = await app.db.lease()
    // Makes the session reset fail (as reroute-wrong-trace.test.ts).
    await holder.unsafe('prepare mine as select 1')
    const tx = app.inject({ method: 'POST', url: '/tx' })
    await waitUntil(() => app.pgPool.stats().waiting === 1, 'the transaction to wait')
    // Queued behind it: it gets the next connection and holds it on the gate.
    const gated = app.inject('/gate')
    await waitUntil(() => app.pgPool.stats().waiting === 2, 'the gated request to wait')
    await holder.release()
    const response = await tx
    expect(response.json()).toMatchObject({ statusCode: 503, code: 'FST_PG_POOL_ACQUIRE_TIMEOUT' })
    expect(resetErrors).toHaveLength(1)
    // Every span of the request has ended with it (the gated request's wait and statement too,
    // once the gate opens).
    await gate.open()
    expect((await gated).statusCode).toBe(200)
    expect([...traced.tracking.open.values()]).toEqual([])
    const spans = traced.ours()
    const transaction = spans.find((s) => s.name === 'transaction')
    expect(transaction?.attributes[ATTR.transactionOutcome]).toBe('rollback')
    const inside = spans.filter((s) => s.parentSpanContext?.spanId === transaction?.spanContext().spanId)
    expect(inside.map((s) => [s.name, s.status.code === SpanStatusCode.ERROR]).sort()).toEqual([
      ['BEGIN', true],
      ['update items', true],
    ])
  } finally {
    await gate.open().catch(() => {})
    await app.close()
  }
}, 30_000)

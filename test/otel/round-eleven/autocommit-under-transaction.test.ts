// Round eleven of hostile probing, fixed (found by the OpenTelemetry probe): a statement that is NOT part of a transaction is drawn as a child of the
// transaction span, because it was sent from the same handler on the same pool.
//
// A route transaction's handler writes an audit row with `app.db` (its own lease, autocommit:
// it commits whatever the route does) and answers 409 (the route transaction rolls back). The
// trace shows `insert audit` under `transaction` (outcome=rollback): read as rolled back, though
// the row is in the table. Same for `app.db` used inside a `request.db.begin()` block or an
// `app.db.transaction()` callback. README: "Statements of a route transaction are children of
// its transaction span" (and only they: the core names each statement's transaction on the
// message, `QueryMessage.transaction`).
// Cause: TransactionSpans.#find (packages/otel/src/transaction-spans.ts:71-77): when the core
// says the statement is in no transaction (`message.transaction` undefined), it still falls
// back to "an open transaction begun under the same active span, on the same pool".
import { FastifyOtelInstrumentation } from '@fastify/otel'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel, { SPAN } from '@fastify-pg-pool/otel'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../support/database.js'
import { startTestSdk, type TestSdk } from '../sdk.js'

let db: TestDatabase
let sdk: TestSdk
let app: FastifyInstance
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe('create table orders (v int); create table audit (v int)')
  sdk = startTestSdk()
  app = Fastify()
  const instrumentation = new FastifyOtelInstrumentation()
  instrumentation.setTracerProvider(sdk.tracerProvider)
  await app.register(instrumentation.plugin())
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 3, applicationName: uniqueName('tx') } })
  await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
  app.post('/order', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into orders values (1)`
    await app.db`insert into audit values (1)` // autocommit, on a lease of its own
    return reply.code(409).send({ rolledBack: true })
  })
  app.post('/block', async (request) => {
    await request.db.begin(async (tx) => {
      await tx`insert into orders values (2)`
      await app.db`insert into audit values (2)`
    })
    return { ok: true }
  })
  await app.ready()
})
afterAll(async () => {
  await app?.close()
  await sdk.shutdown()
  await db.drop()
})

const parentName = (span: ReadableSpan, all: ReadableSpan[]) =>
  all.find((s) => s.spanContext().spanId === span.parentSpanContext?.spanId)?.name

test('route transaction rolled back: the autocommitted app.db insert is not drawn inside it', async () => {
  sdk.reset()
  expect((await app.inject({ method: 'POST', url: '/order' })).statusCode).toBe(409)
  const rows = await db.sql<
    { n: number }[]
  >`select (select count(*)::int from orders) as orders, (select count(*)::int from audit where v = 1) as n`
  expect(rows[0]).toEqual({ orders: 0, n: 1 }) // the order rolled back, the audit row committed
  const all = sdk.spans()
  const transaction = all.find((s) => s.name === SPAN.transaction)
  expect(transaction?.attributes['fastify_pg_pool.transaction.outcome']).toBe('rollback')
  expect(parentName(all.find((s) => s.name === 'insert orders') as ReadableSpan, all)).toBe(SPAN.transaction)
  const audit = all.find((s) => s.name === 'insert audit') as ReadableSpan
  expect(audit).toBeDefined()
  expect(parentName(audit, all)).not.toBe(SPAN.transaction)
})

test('request.db.begin() block: an app.db statement sent from its callback is not in the block', async () => {
  sdk.reset()
  expect((await app.inject({ method: 'POST', url: '/block' })).statusCode).toBe(200)
  const all = sdk.spans()
  expect(parentName(all.find((s) => s.name === 'insert orders') as ReadableSpan, all)).toBe(SPAN.transaction)
  const audit = all.find((s) => s.name === 'insert audit') as ReadableSpan
  expect(audit).toBeDefined()
  expect(parentName(audit, all)).not.toBe(SPAN.transaction)
})

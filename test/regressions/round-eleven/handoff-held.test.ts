// Round eleven, second round (attacks on its fixes) (held): the hand-off paths that go through the pool's resume (pool.ts #give)
// keep each waiter in its own async context; a refused wait is counted once everywhere.
import { AsyncLocalStorage } from 'node:async_hooks'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import pgPoolOtel from '@fastify-pg-pool/otel'
import { context, type Span, trace } from '@opentelemetry/api'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../../metrics/exposition.js'
import { closeGate, createTables } from '../../otel/helpers.js'
import { startTestSdk, type TestSdk } from '../../otel/sdk.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../../support/database.js'

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

test('leaseApplicationName of a waiter rerouted by a failed session reset reads its own AsyncLocalStorage (asked once)', async () => {
  const als = new AsyncLocalStorage<string>()
  const seen: (string | undefined)[] = []
  const app = Fastify()
  await app.register(pgPoolCore, {
    connection: db.url,
    pool: { max: 1, applicationName: uniqueName('rr') },
    leaseApplicationName: () => {
      seen.push(als.getStore())
      return undefined
    },
  })
  await app.ready()
  try {
    const leaseA = await als.run('A', () => app.db.lease())
    await als.run('A', async () => await leaseA.unsafe('prepare mine as select 1'))
    seen.length = 0
    const jobB = als.run('B', async () => await app.db`select 1 as one`)
    await waitUntil(() => app.pgPool.stats().waiting === 1, 'job B to wait')
    await als.run('A', () => leaseA.release())
    expect(await jobB).toEqual([{ one: 1 }])
    expect(seen).toEqual(['B'])
  } finally {
    await app.close()
  }
})

test('request waiters without any tracer: leaseApplicationName and onLease read their own AsyncLocalStorage', async () => {
  const als = new AsyncLocalStorage<string>()
  const mismatches: string[] = []
  const app = Fastify()
  await app.register(pgPoolCore, {
    connection: db.url,
    pool: { max: 1, applicationName: uniqueName('als'), acquireTimeout: 10_000 },
    leaseApplicationName: (request) => {
      const id = (request as { id?: string } | undefined)?.id
      if (id !== undefined && als.getStore() !== id) mismatches.push(`label of ${id} in ${als.getStore()}`)
      return undefined
    },
    onLease: async (request) => {
      const id = (request as { id?: string } | undefined)?.id
      if (id !== undefined && als.getStore() !== id) mismatches.push(`onLease of ${id} in ${als.getStore()}`)
    },
  })
  app.addHook('onRequest', (request, _reply, done) => als.run(request.id, done))
  app.get('/gate', async (request) => (await request.db`select count(*)::int as n from gate`)[0])
  app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
  await app.ready()
  try {
    const gate = await closeGate(db)
    const holder = app.inject('/gate')
    await waitUntil(() => app.pgPool.stats().leased === 1, '/gate to hold the connection')
    const waiters = [app.inject('/one'), app.inject('/one'), app.inject('/one')]
    await waitUntil(() => app.pgPool.stats().waiting === 3, 'three waiters')
    await gate.open()
    expect((await Promise.all([holder, ...waiters])).map((r) => r.statusCode)).toEqual([200, 200, 200, 200])
    expect(mismatches).toEqual([])
  } finally {
    await app.close()
  }
})

test('app.db.transaction() jobs that waited: BEGIN, statements and COMMIT under their own transaction span', async () => {
  sdk.reset()
  const app = Fastify()
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 1, applicationName: uniqueName('tx') } })
  await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
  await app.ready()
  const tracer = sdk.tracerProvider.getTracer('test')
  const within = <T>(span: Span, fn: () => T) => context.with(trace.setSpan(context.active(), span), fn)
  try {
    const jobs = ['A', 'B', 'C'].map((name) => tracer.startSpan(`job ${name}`))
    const holder = await within(jobs[0] as Span, () => app.db.lease())
    const work = jobs.slice(1).map((span) =>
      within(span, () =>
        app.db.transaction(async (tx) => {
          await tx`update items set stock = stock where id = 1`
          await tx.savepoint(async (sp) => sp`select 1`)
        }),
      ),
    )
    await waitUntil(() => app.pgPool.stats().waiting === 2, 'two transactions to wait')
    await within(jobs[0] as Span, () => holder.release())
    await Promise.all(work)
    for (const span of jobs) span.end()
    const spans = sdk.spans()
    for (const job of jobs.slice(1)) {
      const mine = spans.filter((s) => s.spanContext().traceId === job.spanContext().traceId)
      const transaction = mine.find((s) => s.name === 'transaction')
      expect(transaction?.parentSpanContext?.spanId).toBe(job.spanContext().spanId)
      const underTransaction = mine
        .filter((s) => s.parentSpanContext?.spanId === transaction?.spanContext().spanId)
        .map((s) => s.name)
      expect(underTransaction).toContain('BEGIN')
      expect(underTransaction).toContain('COMMIT')
      expect(underTransaction).toContain('update items')
    }
    // Nothing of B or C in A's trace but A's own.
    const inA = spans.filter((s) => s.spanContext().traceId === jobs[0]?.spanContext().traceId).map((s) => s.name)
    expect(inA.sort()).toEqual(['SELECT', 'job A'])
  } finally {
    await app.close()
  }
})

test('a wait refused at once (queue full) is counted once: one acquireError, one rejected acquire, one span', async () => {
  sdk.reset()
  const app = Fastify()
  await app.register(pgPoolCore, {
    connection: db.url,
    pool: { max: 1, maxWaiting: 1, applicationName: uniqueName('qf') },
  })
  await app.register(pgPoolMetrics)
  await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
  const errors: string[] = []
  app.pgPool.on('acquireError', (reason) => void errors.push(reason))
  app.get('/gate', async (request) => (await request.db`select count(*)::int as n from gate`)[0])
  app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
  await app.ready()
  try {
    const gate = await closeGate(db)
    const holder = app.inject('/gate')
    await waitUntil(() => app.pgPool.stats().leased === 1, '/gate to hold the connection')
    const waiter = app.inject('/one')
    await waitUntil(() => app.pgPool.stats().waiting === 1, 'the queue full')
    const refused = await app.inject('/one')
    expect(refused.json().code).toBe('FST_PG_POOL_QUEUE_FULL')
    await gate.open()
    await Promise.all([holder, waiter])
    expect(errors).toEqual(['rejected'])
    const m = parseExposition((await app.inject('/metrics')).body)
    expect(m.value('pg_pool_acquires_total', { result: 'rejected' })).toBe(1)
    expect(m.value('pg_pool_acquires_total', { result: 'ok' })).toBe(2) // /gate and the waiter
    const refusedSpans = sdk
      .spans()
      .filter((s) => s.name === 'acquire connection' && s.attributes['error.type'] !== undefined)
    expect(refusedSpans.map((s) => s.attributes['error.type'])).toEqual(['FST_PG_POOL_QUEUE_FULL'])
    const collected = await sdk.collect()
    const timeouts = collected.scopeMetrics
      .flatMap((scope) => scope.metrics)
      .filter((metric) => metric.descriptor.name === 'db.client.connection.timeouts')
      .flatMap((metric) => metric.dataPoints.map((point) => point.value))
    expect(timeouts.every((value) => value === 0)).toBe(true)
  } finally {
    await app.close()
  }
})

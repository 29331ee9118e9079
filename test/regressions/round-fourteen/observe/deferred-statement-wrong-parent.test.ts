// Round fourteen (observability probe): a statement the handler sends under a span of its own
// while onLease still prepares the connection is held (lease.ts #held), then sent from onLease's
// completion, in the context the lease was attached in. Statements queued behind one another
// (#queued) keep their caller's context (a snapshot each); held ones did not: the span of the
// handler's statement was a child of the request, not of the handler's own span around it.
// Likewise statements sent while the lease waits for a connection (#pending): each is sent once
// the connection comes, in the context the wait began in.
import { FastifyOtelInstrumentation } from '@fastify/otel'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../../../support/database.js'
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

test('a statement sent under the handler’s own span while onLease runs is that span’s child', async () => {
  const traced = tracedProvider()
  const app = Fastify()
  const instrumentation = new FastifyOtelInstrumentation()
  instrumentation.setTracerProvider(traced.provider)
  await app.register(instrumentation.plugin())
  await app.register(pgPoolCore, {
    connection: db.url,
    pool: { max: 1, applicationName: uniqueName('held') },
    onLease: async (_request, sql) => {
      await sql`select pg_sleep(0.2) as on_lease`
    },
  })
  await app.register(pgPoolOtel, { tracerProvider: traced.provider, metrics: false })
  const tracer = traced.provider.getTracer('app')
  app.get('/held', async (request) => {
    // The first statement takes the lease: onLease starts; the second is held behind it.
    const first = request.db`select 1 as first_one`.execute()
    await tracer.startActiveSpan('inner work', async (span) => {
      await request.db`select 2 as second_one`
      span.end()
    })
    await first
    return { ok: true }
  })
  try {
    expect((await app.inject('/held')).statusCode).toBe(200)
  } finally {
    await app.close()
  }
  const all = traced.exporter.getFinishedSpans()
  const inner = all.find((s) => s.name === 'inner work')
  const statements = traced.ours().filter((s) => s.name === 'select')
  expect(statements).toHaveLength(3) // onLease's, first, second
  const second = statements.filter((s) => s.parentSpanContext?.spanId === inner?.spanContext().spanId)
  // The statement awaited inside 'inner work' is its child.
  expect(second).toHaveLength(1)
})

test('statements sent under two spans of the handler while the lease waits: each its own span’s child', async () => {
  const traced = tracedProvider()
  const app = Fastify()
  const instrumentation = new FastifyOtelInstrumentation()
  instrumentation.setTracerProvider(traced.provider)
  await app.register(instrumentation.plugin())
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 1, applicationName: uniqueName('pend') } })
  await app.register(pgPoolOtel, { tracerProvider: traced.provider, metrics: false })
  const tracer = traced.provider.getTracer('app')
  let release!: () => void
  const released = new Promise<void>((resolve) => {
    release = resolve
  })
  app.get('/hold', async (request) => {
    await request.db`select 1 as holding`
    await released
    return { ok: true }
  })
  app.get('/two', async (request) => {
    const under = (name: string) =>
      tracer.startActiveSpan(name, async (span) => {
        await request.db`select ${name}::text as under`
        span.end()
      })
    await Promise.all([under('span a'), under('span b')])
    return { ok: true }
  })
  try {
    const holding = app.inject('/hold')
    await waitUntil(() => app.pgPool.stats().leased === 1, 'the holder')
    const two = app.inject('/two')
    await waitUntil(() => app.pgPool.stats().waiting === 1, 'the waiter')
    release()
    expect((await holding).statusCode).toBe(200)
    expect((await two).statusCode).toBe(200)
  } finally {
    await app.close()
  }
  const all = traced.exporter.getFinishedSpans()
  const idOf = (name: string) => all.find((s) => s.name === name)?.spanContext().spanId
  const parents = traced
    .ours()
    .filter((s) => s.name === 'select' && s.attributes['db.operation.name'] === 'select')
    .map((s) => s.parentSpanContext?.spanId)
  const a = idOf('span a')
  const b = idOf('span b')
  expect([a, b].every((id) => id !== undefined)).toBe(true)
  expect(parents.filter((p) => p === a || p === b).sort()).toEqual([a, b].sort())
})

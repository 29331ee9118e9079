// Round eleven of hostile probing, fixed (found by the OpenTelemetry probe): a statement of one request/job is recorded in ANOTHER request's trace.
//
// WaiterContexts (packages/otel/src/waiter-contexts.ts) makes every statement of a pool that
// starts between a waiter's hand-off and the next microtask checkpoint a child of the WAITER's
// context, whatever context the statement really runs in. postgres.js dispatches a statement one
// microtask after `.then()` (`await 1` in Query.handle), so a statement started just before
// another lease is released (and handed to a waiter) is dispatched inside that window: its span
// lands in the waiter's trace. The README promises "Spans start in the active context"; the
// brief: no span of one request may appear in another request's trace.
import { FastifyOtelInstrumentation } from '@fastify/otel'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import { context, propagation, type Span, type TextMapPropagator, TraceFlags, trace } from '@opentelemetry/api'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../../support/database.js'
import { startTestSdk, type TestSdk } from '../sdk.js'

/** The W3C traceparent header, read (what @opentelemetry/core's propagator does). */
const traceparentPropagator: TextMapPropagator = {
  inject() {},
  extract(ctx, carrier, getter) {
    const header = getter.get(carrier, 'traceparent')
    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/.exec(String(header ?? ''))
    if (m === null) return ctx
    return trace.setSpanContext(ctx, {
      traceId: m[1] as string,
      spanId: m[2] as string,
      traceFlags: TraceFlags.SAMPLED,
      isRemote: true,
    })
  },
  fields: () => ['traceparent'],
}

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe('create table mine (v int); create table theirs (v int)')
  sdk = startTestSdk()
  propagation.setGlobalPropagator(traceparentPropagator)
})
afterAll(async () => {
  propagation.disable()
  await sdk.shutdown()
  await db.drop()
})

test('app.db jobs: a statement started as another job’s lease is handed to a waiter stays in its own trace', async () => {
  const app = Fastify()
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 2, applicationName: uniqueName('ho') } })
  await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
  await app.ready()
  const tracer = sdk.tracerProvider.getTracer('test')
  const misplaced: string[] = []
  try {
    // k: microtask hops between starting C's statement and releasing A's lease.
    for (let k = 0; k < 5; k++) {
      sdk.reset()
      const [a, b, c] = ['job A', 'job B', 'job C'].map((name) => tracer.startSpan(name)) as [Span, Span, Span]
      const within = <T>(span: Span, fn: () => T) => context.with(trace.setSpan(context.active(), span), fn)
      const leaseC = await within(c, () => app.db.lease())
      const leaseA = await within(a, () => app.db.lease())
      // B waits for a connection (both are held).
      const jobB = within(b, async () => {
        const lease = await app.db.lease()
        await lease`select v from theirs`
        await lease.release()
      })
      await waitUntil(() => app.pgPool.stats().waiting === 1, 'job B to wait')
      // C starts a statement; A gives its connection back (to B) a moment later.
      const work = within(c, () => Promise.all([leaseC`select v from mine`]))
      await within(a, async () => {
        for (let i = 0; i < k; i++) await null
        await leaseA.release()
      })
      await work
      await leaseC.release()
      await jobB
      for (const span of [a, b, c]) span.end()
      for (const span of sdk.spans().filter((s) => s.name === 'select mine')) {
        const id = span.spanContext().traceId
        if (id !== c.spanContext().traceId) {
          misplaced.push(
            `k=${k}: job C's "select mine" is in job ${id === b.spanContext().traceId ? 'B' : '?'}'s trace`,
          )
        }
      }
    }
  } finally {
    await app.close()
  }
  expect(misplaced).toEqual([])
})

test('requests with their own traceparent: a request’s statement never lands in the trace of the request its job lease was handed to', async () => {
  const app = Fastify()
  const instrumentation = new FastifyOtelInstrumentation()
  instrumentation.setTracerProvider(sdk.tracerProvider)
  await app.register(instrumentation.plugin())
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 2, applicationName: uniqueName('ho') } })
  await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
  let proceed: () => void = () => {}
  app.get<{ Querystring: { k: string } }>('/report', async (request) => {
    await request.db`select 1 as warm` // the request's own connection
    const job = await app.db.lease() // and a job lease: the pool is full
    await new Promise<void>((resolve) => {
      proceed = resolve
    })
    const rows = Promise.all([request.db`select v from mine`])
    for (let i = 0; i < Number(request.query.k); i++) await null
    await job.release() // handed to /other, which waits
    await rows
    return { ok: true }
  })
  app.get('/other', async (request) => {
    await request.db`select v from theirs`
    return { ok: true }
  })
  await app.ready()
  const traceId = (n: number, who: string) => `${who}${String(n).padStart(2, '0')}`.padEnd(32, '0')
  const traceparent = (id: string) => `00-${id}-00f067aa0ba902b7-01`
  const misplaced: string[] = []
  try {
    for (let k = 0; k < 5; k++) {
      sdk.reset()
      const reportTrace = traceId(k, 'aaaa')
      const otherTrace = traceId(k, 'bbbb')
      const report = app.inject({ url: `/report?k=${k}`, headers: { traceparent: traceparent(reportTrace) } })
      await waitUntil(() => app.pgPool.stats().leased === 2, 'both connections held')
      const other = app.inject({ url: '/other', headers: { traceparent: traceparent(otherTrace) } })
      await waitUntil(() => app.pgPool.stats().waiting === 1, '/other to wait')
      proceed()
      expect((await report).statusCode).toBe(200)
      expect((await other).statusCode).toBe(200)
      for (const span of sdk.spans().filter((s) => s.name === 'select mine')) {
        const id = span.spanContext().traceId
        if (id !== reportTrace)
          misplaced.push(`k=${k}: /report's "select mine" is in ${id === otherTrace ? "/other's" : id} trace`)
      }
    }
  } finally {
    await app.close()
  }
  expect(misplaced).toEqual([])
})

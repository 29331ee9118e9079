// Held attacks from hostile probing (round 8, observability): are the OpenTelemetry spans true after hostile concurrent workloads?
// Every span ended exactly once, the right status, parents right under concurrency, no secrets.
// "app.close() with statements running ..." failed before the fix of close-cuts-transaction.test.ts
// (a ROLLBACK span never ended, a transaction span without outcome); the others held.
import { FastifyOtelInstrumentation } from '@fastify/otel'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel, { ATTR, SPAN } from '@fastify-pg-pool/otel'
import { context, DiagLogLevel, diag, SpanStatusCode, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  type Span,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen, startPost, startRequest } from '../support/http.js'

class Tracking implements SpanProcessor {
  open = new Map<Span, string>()
  endCalls = new Map<ReadableSpan, number>()
  onStart(span: Span): void {
    this.open.set(span, span.name)
  }
  onEnd(span: ReadableSpan): void {
    this.open.delete(span as Span)
    this.endCalls.set(span, (this.endCalls.get(span) ?? 0) + 1)
  }
  async forceFlush() {}
  async shutdown() {}
}

let db: TestDatabase
let provider: BasicTracerProvider
let exporter: InMemorySpanExporter
let tracking: Tracking
const warnings: string[] = []
let app: FastifyInstance | undefined
const N = 12
const SECRET = `s3cr3t-${Date.now()}`

beforeAll(async () => {
  db = await createTestDatabase()
  for (let i = 0; i < N; i++) await db.sql.unsafe(`create table tb${i} (v text)`)
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  diag.setLogger(
    {
      error: (m: string) => warnings.push(`error ${m}`),
      warn: (m: string) => warnings.push(`warn ${m}`),
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    DiagLogLevel.WARN,
  )
})
beforeEach(() => {
  exporter = new InMemorySpanExporter()
  tracking = new Tracking()
  provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter), tracking] })
  trace.setGlobalTracerProvider(provider)
  warnings.length = 0
})
afterEach(async () => {
  await app?.close()
  app = undefined
  trace.disable()
})
afterAll(async () => {
  diag.disable()
  context.disable()
  await db.drop()
})

async function build(pool: Record<string, unknown> = {}) {
  const a = Fastify({ logger: false })
  const instrumentation = new FastifyOtelInstrumentation()
  instrumentation.setTracerProvider(provider)
  await a.register(instrumentation.plugin())
  const applicationName = uniqueName('obsotel')
  await a.register(pgPoolCore, {
    connection: db.url,
    pool: {
      max: 2,
      maxWaiting: 200,
      acquireTimeout: 5_000,
      applicationName,
      pgbouncer: db.viaBouncer,
      closeTimeout: 300,
      ...pool,
    },
  })
  await a.register(pgPoolOtel, {})
  // Each request reads its own table: the statement spans are named `select tbN`, `insert tbN`.
  a.get<{ Params: { n: string } }>('/q/:n', async (request) => {
    const t = `tb${Number(request.params.n)}`
    await request.db.unsafe(`select count(*) from ${t}`)
    await request.db.unsafe(`select v from ${t} where v = $1`, [SECRET])
    await request.db.unsafe(`select count(*), pg_sleep(0.01) from ${t}`)
    return { ok: true }
  })
  a.post<{ Params: { n: string } }>('/tx/:n', { config: { db: { transaction: true } } }, async (request) => {
    const t = `tb${Number(request.params.n)}`
    await request.db.unsafe(`insert into ${t} (v) values ($1)`, [SECRET])
    await request.db.unsafe(`select count(*), pg_sleep(0.01) from ${t}`)
    return { ok: true }
  })
  a.post<{ Params: { n: string } }>('/txlong/:n', { config: { db: { transaction: true } } }, async (request) => {
    const t = `tb${Number(request.params.n)}`
    await request.db.unsafe(`insert into ${t} (v) values ($1)`, [SECRET])
    await request.db.unsafe(`select count(*), pg_sleep(0.3 * ${Number(request.params.n)}) from ${t}`)
    return { ok: true }
  })
  a.get<{ Params: { n: string } }>('/p/:n', { config: { db: { pipeline: true } } }, async (request) => {
    const t = `tb${Number(request.params.n)}`
    await request.db.unsafe(`select count(*), pg_sleep(0.02) from ${t}`)
    return { ok: true }
  })
  a.get('/sleep', async (request) => {
    await request.db`select pg_sleep(10)`
    return { never: true }
  })
  a.post('/txsleep', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`select pg_sleep(10)`
    return { never: true }
  })
  a.get('/ht', { handlerTimeout: 300 }, async (request) => {
    await request.db`select pg_sleep(10) as ht`
    return { never: true }
  })
  a.post('/txht', { handlerTimeout: 300, config: { db: { transaction: true } } }, async (request) => {
    await request.db`select pg_sleep(10) as txht`
    return { never: true }
  })
  const base = await listen(a)
  app = a
  return { app: a, base, applicationName }
}

const ours = (spans: readonly ReadableSpan[]) =>
  spans.filter((s) => s.instrumentationScope.name === '@fastify-pg-pool/otel')
const requestSpans = (spans: readonly ReadableSpan[]) =>
  spans.filter((s) => s.attributes['fastify.root'] === '@fastify/otel')

function checkEndedOnce() {
  expect([...tracking.open.values()]).toEqual([])
  expect([...tracking.endCalls.values()].filter((n) => n !== 1)).toEqual([])
  expect(warnings.filter((w) => /ended|end/i.test(w))).toEqual([])
}

/** Every string in the spans' attributes, events and statuses. */
function allStrings(spans: readonly ReadableSpan[]): string {
  const out: string[] = []
  for (const s of spans) {
    out.push(s.name, s.status.message ?? '')
    for (const [k, v] of Object.entries(s.attributes)) out.push(k, String(v))
    for (const e of s.events) {
      out.push(e.name)
      for (const [k, v] of Object.entries(e.attributes ?? {})) out.push(k, String(v))
    }
  }
  return out.join('\n')
}

describe('concurrent requests with waits and hand-offs', () => {
  test('each statement span sits in its own request’s trace, under its own transaction', async () => {
    const { base } = await build()
    const statuses = await Promise.all([
      ...Array.from({ length: N }, (_, i) => fetch(`${base}/q/${i}`).then((r) => r.status)),
      ...Array.from({ length: N }, (_, i) => fetch(`${base}/tx/${i}`, { method: 'POST' }).then((r) => r.status)),
    ])
    expect(statuses.filter((s) => s !== 200)).toEqual([])
    await waitUntil(() => tracking.open.size === 0, 'every span to end', 5_000)
    const all = exporter.getFinishedSpans()
    const byTrace = new Map<string, ReadableSpan>()
    for (const r of requestSpans(all)) byTrace.set(r.spanContext().traceId, r)
    const misplaced: string[] = []
    for (const s of ours(all)) {
      const m = /tb(\d+)/.exec(s.name)
      if (m === null) continue
      const request = byTrace.get(s.spanContext().traceId)
      const url = String(request?.attributes['url.path'] ?? request?.attributes['http.target'] ?? request?.name)
      if (!new RegExp(`/(q|tx)/${m[1]}$`).test(url)) misplaced.push(`${s.name} in trace of ${url}`)
    }
    expect(misplaced).toEqual([])
    // Statements of a route transaction are children of that request's transaction span.
    const transactions = all.filter((s) => s.name === SPAN.transaction)
    expect(transactions).toHaveLength(N)
    for (const t of transactions) {
      const children = ours(all).filter((s) => s.parentSpanContext?.spanId === t.spanContext().spanId)
      const names = children.map((s) => s.name)
      expect(names[0]).toBe('BEGIN')
      expect(names.at(-1)).toBe('COMMIT')
      expect(names.filter((n) => /tb\d+/.test(n))).toHaveLength(2)
      const tables = new Set(names.filter((n) => /tb\d+/.test(n)).map((n) => /tb\d+/.exec(n)?.[0]))
      expect(tables.size).toBe(1)
      expect(t.attributes[ATTR.transactionOutcome]).toBe('commit')
    }
    expect(allStrings(all.filter((s) => s.instrumentationScope.name === '@fastify-pg-pool/otel'))).not.toContain(SECRET)
    checkEndedOnce()
  })

  test('pipelined requests sharing connections: each statement in its own trace', async () => {
    const { base } = await build({ pipelineDepth: 4 })
    const statuses = await Promise.all(
      Array.from({ length: 3 * N }, (_, i) => fetch(`${base}/p/${i % N}`).then((r) => r.status)),
    )
    expect(statuses.filter((s) => s !== 200)).toEqual([])
    await waitUntil(() => tracking.open.size === 0, 'every span to end', 5_000)
    const all = exporter.getFinishedSpans()
    const byTrace = new Map<string, ReadableSpan>()
    for (const r of requestSpans(all)) byTrace.set(r.spanContext().traceId, r)
    const misplaced: string[] = []
    for (const s of ours(all)) {
      const m = /tb(\d+)/.exec(s.name)
      if (m === null) continue
      const request = byTrace.get(s.spanContext().traceId)
      const url = String(request?.attributes['url.path'] ?? request?.name)
      if (!new RegExp(`/p/${m[1]}$`).test(url)) misplaced.push(`${s.name} in trace of ${url}`)
    }
    expect(misplaced).toEqual([])
    expect(ours(all).filter((s) => /tb\d+/.test(s.name))).toHaveLength(3 * N)
    checkEndedOnce()
  })
})

describe('requests that continue one upstream trace (a gateway fanning out with one traceparent)', () => {
  test('each route transaction’s COMMIT is the child of its own transaction span', async () => {
    const { app: a, base } = await build({ max: 3 })
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
    // Both transactions open at once: each holds its connection until both have begun.
    const statuses = await Promise.all(
      [1, 2, 3].map((n) =>
        fetch(`${base}/txlong/${n}`, { method: 'POST', headers: { traceparent } }).then((r) => r.status),
      ),
    )
    expect(statuses).toEqual([200, 200, 200])
    await waitUntil(() => a.pgPool.stats().leased === 0, 'leases back')
    await waitFor(() => tracking.open.size === 0, 3_000)
    const all = exporter.getFinishedSpans()
    const transactions = all.filter((s) => s.name === SPAN.transaction)
    expect(transactions).toHaveLength(3)
    const children = (t: ReadableSpan) =>
      ours(all)
        .filter((s) => s.parentSpanContext?.spanId === t.spanContext().spanId)
        .map((s) => s.name.replace(/tb\d+/, 'tb'))
    expect(transactions.map(children)).toEqual(Array(3).fill(['BEGIN', 'insert tb', 'select tb', 'COMMIT']))
  })
})

describe('every path ends every span once, with the right status', () => {
  test('hang-ups while waiting and while running, acquire timeouts, handlerTimeout on plain and transaction routes', async () => {
    const { app: a, base, applicationName } = await build({ acquireTimeout: 600 })
    // Both connections held by transaction and plain sleepers, then waiters that hang up / time out.
    const sleeper = startRequest(`${base}/sleep`)
    const txSleeper = startPost(`${base}/txsleep`, {})
    await waitUntil(() => a.pgPool.stats().leased === 2, 'two leases')
    await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(10)%')) === 2, 'both sleep', 5_000)
    const hangers = [startRequest(`${base}/q/1`), startRequest(`${base}/q/2`)]
    await waitUntil(() => a.pgPool.stats().waiting === 2, 'two waiters')
    for (const h of hangers) h.abort()
    await Promise.all(hangers.map((h) => h.done))
    const timedOut = await fetch(`${base}/q/3`).then((r) => r.status)
    expect(timedOut).toBe(503)
    sleeper.abort()
    txSleeper.abort()
    await Promise.all([sleeper.done, txSleeper.done])
    await waitUntil(() => a.pgPool.stats().leased === 0, 'leases back', 5_000)
    expect(await fetch(`${base}/ht`).then((r) => r.status)).toBe(503)
    expect(await fetch(`${base}/txht`, { method: 'POST' }).then((r) => r.status)).toBe(503)
    await waitUntil(() => a.pgPool.stats().leased === 0, 'leases back', 5_000)
    await waitFor(() => tracking.open.size === 0, 5_000)
    checkEndedOnce()

    const all = exporter.getFinishedSpans()
    const acquires = all.filter((s) => s.name === SPAN.acquire)
    // (A sleeper may have waited for a connection being opened: an ok wait, no error.)
    const failed = acquires.filter((s) => s.attributes[ATTR.errorType] !== undefined)
    const errorTypes = failed.map((s) => String(s.attributes[ATTR.errorType])).sort()
    expect(errorTypes).toEqual(['FST_PG_POOL_ABORTED', 'FST_PG_POOL_ABORTED', 'FST_PG_POOL_ACQUIRE_TIMEOUT'])
    for (const s of failed) expect(s.status.code).toBe(SpanStatusCode.ERROR)
    for (const s of acquires.filter((s) => s.attributes[ATTR.errorType] === undefined)) {
      expect(s.status.code).toBe(SpanStatusCode.UNSET)
      expect(s.attributes[ATTR.route]).toMatch(/sleep/)
    }
    const txs = all.filter((s) => s.name === SPAN.transaction)
    expect(txs.map((s) => s.attributes[ATTR.transactionOutcome]).sort()).toEqual(['rollback', 'rollback'])
    // The statements that were cut are errors; none is a success.
    const cut = ours(all).filter((s) => s.name === 'select' && s.kind === 2)
    const sleeps = cut.filter((s) => s.status.code !== SpanStatusCode.ERROR)
    expect(sleeps.map((s) => [s.name, s.attributes[ATTR.errorType]])).toEqual([])
  })

  test('app.close() with statements running, waiters queued and a transaction open: every span ends once', async () => {
    const { app: a, base, applicationName } = await build({ acquireTimeout: 10_000 })
    const sleeper = startRequest(`${base}/sleep`)
    const txSleeper = startPost(`${base}/txsleep`, {})
    await waitUntil(() => a.pgPool.stats().leased === 2, 'two leases')
    await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(10)%')) === 2, 'both sleep', 5_000)
    const waiters = [startRequest(`${base}/q/1`), startPost(`${base}/tx/2`, {}), startRequest(`${base}/p/3`)]
    await waitUntil(() => a.pgPool.stats().waiting === 3, 'three waiters')
    await a.close()
    app = undefined
    const closeStatuses: unknown[] = await Promise.all([sleeper.done, txSleeper.done, ...waiters.map((w) => w.done)])
    await waitFor(() => tracking.open.size === 0, 3_000)
    // DEFECT: the ROLLBACK the pool sends during close() starts a span whose end is published
    // after the plugin's onClose unsubscribed: that span never ends (never exported).
    expect.soft([...tracking.open.values()]).toEqual([])
    const txSpans = exporter.getFinishedSpans().filter((s) => s.name === SPAN.transaction)
    expect.soft(txSpans.map((s) => s.attributes[ATTR.transactionOutcome])).toEqual(['rollback'])
    const acquires = exporter.getFinishedSpans().filter((s) => s.name === SPAN.acquire)
    expect(acquires.length).toBeGreaterThanOrEqual(2)
    expect(closeStatuses).toEqual([503, 503, 503, 503, 503])
    // The three waiters' waits end as errors (FST_PG_POOL_CLOSED).
    const waits = acquires.filter((s) => /^\/(q|tx|p)\//.test(String(s.attributes[ATTR.route])))
    expect(waits.length).toBeGreaterThanOrEqual(2)
    expect(waits.map((s) => [s.status.code, s.attributes[ATTR.errorType]])).toEqual(
      Array(waits.length).fill([SpanStatusCode.ERROR, 'FST_PG_POOL_CLOSED']),
    )
  })
})

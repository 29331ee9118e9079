import { ATTR, REFUSAL_EVENT, SPAN } from '@fastify-pg-pool/otel'
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { startTcpProxy } from '../support/tcp-proxy.js'
import { closeGate, createTables, type OtelApp, otelApp, type PasswordRole, passwordRole } from './helpers.js'
import { ancestors, parentOf, spanStrings, startTestSdk, type TestSdk } from './sdk.js'

let db: TestDatabase
let sdk: TestSdk
let role: PasswordRole
const apps: OtelApp[] = []

beforeAll(async () => {
  db = await createTestDatabase()
  await createTables(db)
  role = await passwordRole(db)
  // Registered globally, as an app's instrumentation file does: the plugin finds it there.
  sdk = startTestSdk({ global: true })
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map(({ app }) => app.close()))
  sdk.reset()
})
afterAll(async () => {
  await sdk.shutdown()
  await role.drop()
  await db.drop()
})

async function start(options: Parameters<typeof otelApp>[1] = {}): Promise<OtelApp> {
  const started = await otelApp(role.url, { fastifyOtel: sdk.tracerProvider, ...options })
  apps.push(started)
  return started
}

const ours = (spans: ReadableSpan[]) => spans.filter((s) => s.instrumentationScope.name === '@fastify-pg-pool/otel')
const named = (spans: ReadableSpan[], name: string) => spans.filter((s) => s.name === name)
const only = (spans: ReadableSpan[], name: string): ReadableSpan => {
  const found = named(spans, name)
  expect(found.map((s) => s.name)).toEqual([name])
  return found[0] as ReadableSpan
}
/** @fastify/otel's request span of the request to `route`. */
const requestSpan = (spans: ReadableSpan[], route: string): ReadableSpan => {
  const found = spans.filter(
    (s) => s.attributes['fastify.root'] === '@fastify/otel' && s.attributes['http.route'] === route,
  )
  expect(found).toHaveLength(1)
  return found[0] as ReadableSpan
}
/** The spans of one trace. */
const traceOf = (spans: ReadableSpan[], root: ReadableSpan) =>
  spans.filter((s) => s.spanContext().traceId === root.spanContext().traceId)

describe('statement, wait and transaction spans', () => {
  test('a request that waits, runs two statements and commits: the expected tree, under @fastify/otel’s request span', async () => {
    const { app } = await start({ pool: { max: 1 } })
    const gate = await closeGate(db)
    const holder = app.inject('/gate')
    await waitUntil(() => app.pgPool.stats().leased === 1, 'the gate request to hold the connection')
    const mover = app.inject({ method: 'POST', url: '/move' })
    await waitUntil(() => app.pgPool.stats().waiting === 1, 'the transaction request to wait')
    await gate.open()
    expect((await holder).statusCode).toBe(200)
    expect((await mover).statusCode).toBe(200)

    const all = sdk.spans()
    const request = requestSpan(all, '/move')
    const spans = traceOf(all, request)
    const acquire = only(spans, SPAN.acquire)
    const transaction = only(spans, SPAN.transaction)
    const inTransaction = (span: ReadableSpan) => parentOf(span) === transaction.spanContext().spanId
    const statements = ours(spans).filter((s) => s.kind === SpanKind.CLIENT && inTransaction(s))
    expect(statements.map((s) => s.name)).toEqual(['BEGIN', 'update items', 'update items', 'COMMIT'])

    // Every span of ours descends from @fastify/otel's request span.
    for (const span of ours(spans)) expect(ancestors(span, spans), span.name).toContain(request)
    // The wait and the transaction side by side under the handler.
    expect(parentOf(acquire)).toBe(parentOf(transaction))
    // Whatever else ran on the lease (the pool's session reset) is not inside the transaction.
    for (const other of ours(spans).filter((s) => s.kind === SpanKind.CLIENT && !inTransaction(s))) {
      expect(other.name).not.toMatch(/update|BEGIN|COMMIT/)
    }

    const pool = app.pgPool.target
    expect(acquire.attributes).toMatchObject({
      [ATTR.poolName]: pool,
      [ATTR.acquireQueued]: 0,
      [ATTR.route]: '/move',
    })
    expect(acquire.status.code).toBe(SpanStatusCode.UNSET)
    expect(transaction.attributes).toMatchObject({
      [ATTR.transactionKind]: 'route',
      [ATTR.transactionOutcome]: 'commit',
      [ATTR.route]: '/move',
    })
    const { host, port, database } = app.pgPool.endpoint
    const update = statements[1] as ReadableSpan
    expect(update.kind).toBe(SpanKind.CLIENT)
    expect(update.attributes).toEqual({
      'db.system.name': 'postgresql',
      'db.namespace': database,
      'server.address': host,
      'server.port': port,
      'db.operation.name': 'update',
      'db.query.summary': 'update items',
    })
    expect(update.status.code).toBe(SpanStatusCode.UNSET)
    // The statements ran after the wait ended. (The SDK anchors each span's clock to Date.now(),
    // so spans compare to within a millisecond or so.)
    const startOf = (span: ReadableSpan) => span.startTime[0] * 1e3 + span.startTime[1] / 1e6
    const endOf = (span: ReadableSpan) => span.endTime[0] * 1e3 + span.endTime[1] / 1e6
    expect(startOf(statements[0] as ReadableSpan)).toBeGreaterThan(endOf(acquire) - 2)
  })

  test('the queue length at entry: the second waiter saw one ahead of it', async () => {
    const { app } = await start({ pool: { max: 1 } })
    const gate = await closeGate(db)
    const holder = app.inject('/gate')
    await waitUntil(() => app.pgPool.stats().leased === 1, 'the gate request to hold the connection')
    const first = app.inject('/item/1')
    await waitUntil(() => app.pgPool.stats().waiting === 1, 'one waiter')
    const second = app.inject('/item/2')
    await waitUntil(() => app.pgPool.stats().waiting === 2, 'two waiters')
    await gate.open()
    await Promise.all([holder, first, second])
    const queued = named(sdk.spans(), SPAN.acquire)
      .map((s) => s.attributes[ATTR.acquireQueued])
      .sort()
    expect(queued).toEqual([0, 1])
  })

  test('a request served at once has no wait span', async () => {
    const { app } = await start()
    expect((await app.inject('/item/1')).statusCode).toBe(200)
    expect(named(sdk.spans(), SPAN.acquire)).toEqual([])
    expect(ours(sdk.spans()).map((s) => s.name)).toEqual(['select items'])
  })

  test('a failing statement carries error.type and the SQLSTATE, never the message (it quotes the value)', async () => {
    const { app } = await start()
    const value = `not-a-number-${Date.now()}`
    const response = await app.inject({ url: '/fail', query: { value } })
    expect(response.statusCode).toBeGreaterThanOrEqual(400)
    const failed = only(ours(sdk.spans()), 'select')
    expect(failed.attributes).toMatchObject({ 'error.type': '22P02', 'db.response.status_code': '22P02' })
    expect(failed.status).toEqual({ code: SpanStatusCode.ERROR, message: '22P02' })
    expect(failed.events).toEqual([])
    expect(spanStrings(ours(sdk.spans())).join('\n')).not.toContain(value)
  })

  test('a rolled-back transaction: outcome rollback, not an error', async () => {
    const { app } = await start()
    expect((await app.inject({ method: 'POST', url: '/refund' })).statusCode).toBe(409)
    const transaction = only(sdk.spans(), SPAN.transaction)
    expect(transaction.attributes[ATTR.transactionOutcome]).toBe('rollback')
    expect(transaction.status.code).toBe(SpanStatusCode.UNSET)
    const inside = sdk.spans().filter((s) => parentOf(s) === transaction.spanContext().spanId)
    expect(inside.map((s) => s.name)).toEqual(['BEGIN', 'update items', 'update items', 'ROLLBACK'])
  })

  test('a COMMIT the server refuses: outcome commit_failed, an error, with the SQLSTATE', async () => {
    const { app } = await start()
    expect((await app.inject({ method: 'POST', url: '/duplicate' })).statusCode).toBe(500)
    const transaction = only(sdk.spans(), SPAN.transaction)
    expect(transaction.attributes).toMatchObject({
      [ATTR.transactionOutcome]: 'commit_failed',
      'error.type': 'commit_failed',
      'db.response.status_code': '23505',
    })
    expect(transaction.status.code).toBe(SpanStatusCode.ERROR)
    const commit = only(ours(sdk.spans()), 'COMMIT')
    expect(parentOf(commit)).toBe(transaction.spanContext().spanId)
    expect(commit.attributes['error.type']).toBe('23505')
  })

  test('a COMMIT whose answer never came (commit_unknown): an error, never success', async () => {
    // The route transaction's COMMIT goes out; from then on the server's answers are swallowed
    // and the connection is cut: the core reports FST_PG_POOL_COMMIT_UNKNOWN.
    const proxy = await startTcpProxy(Number(new URL(role.url).port))
    try {
      const started = await otelApp(proxy.urlFor(role.url), { fastifyOtel: sdk.tracerProvider, pool: { max: 1 } })
      apps.push(started)
      const commit = Buffer.concat([Buffer.from([0x51, 0, 0, 0, 11]), Buffer.from('COMMIT\0')])
      let committing = false
      proxy.onClientData = (chunk) => {
        if (chunk.includes(commit)) committing = true
      }
      proxy.onServerData = () => {
        if (!committing) return true
        setImmediate(() => proxy.cutAll())
        return false
      }
      const response = await started.app.inject({ method: 'POST', url: '/move' })
      expect(response.json().code).toBe('FST_PG_POOL_COMMIT_UNKNOWN')
      const transaction = only(sdk.spans(), SPAN.transaction)
      expect(transaction.attributes).toMatchObject({
        [ATTR.transactionOutcome]: 'commit_unknown',
        'error.type': 'commit_unknown',
      })
      expect(transaction.status).toEqual({ code: SpanStatusCode.ERROR, message: 'commit_unknown' })
    } finally {
      await Promise.all(apps.splice(0).map(({ app }) => app.close()))
      await proxy.close()
    }
  })

  test('work outside requests (app.db) under the caller’s own span', async () => {
    const { app } = await start()
    const tracer = sdk.tracerProvider.getTracer('job')
    await tracer.startActiveSpan('nightly job', async (job) => {
      await app.db`select id from items where id = ${1}`
      job.end()
    })
    const job = only(sdk.spans(), 'nightly job')
    const statement = only(ours(sdk.spans()), 'select items')
    expect(parentOf(statement)).toBe(job.spanContext().spanId)
  })

  test('statements of another app in the same process are not ours to record', async () => {
    const { app } = await start({ otel: { pools: () => [] } })
    expect((await app.inject('/item/1')).statusCode).toBe(200)
    expect(ours(sdk.spans())).toEqual([])
  })
})

describe('refusals', () => {
  test('a request refused by admission control carries the refusal as an event on its request span', async () => {
    const { app } = await start({ pool: { max: 1, maxWaiting: 1 }, backpressure: { process: false } })
    const gate = await closeGate(db)
    const holder = app.inject('/gate')
    await waitUntil(() => app.pgPool.stats().leased === 1, 'the gate request to hold the connection')
    const waiter = app.inject('/item/1')
    await waitUntil(() => app.pgPool.stats().waiting === 1, 'one waiter')
    const refused = await app.inject('/item/2')
    expect(refused.statusCode).toBe(503)
    await gate.open()
    await Promise.all([holder, waiter])

    // Exactly one span carries the event: the refused request's own.
    const withEvent = sdk.spans().filter((s) => s.events.some((e) => e.name === REFUSAL_EVENT))
    expect(withEvent).toHaveLength(1)
    const request = withEvent[0] as ReadableSpan
    expect(request.attributes).toMatchObject({
      'fastify.root': '@fastify/otel',
      'http.route': '/item/:id',
      'http.response.status_code': 503,
    })
    const event = request.events.find((e) => e.name === REFUSAL_EVENT)
    expect(event?.attributes).toEqual({
      [ATTR.poolName]: app.pgPool.target,
      [ATTR.refusalReason]: 'queue_full',
      [ATTR.route]: '/item/:id',
    })
    // Refused before the pool: no statement, no wait of its own.
    expect(
      traceOf(sdk.spans(), request).filter((s) => s.instrumentationScope.name === '@fastify-pg-pool/otel'),
    ).toEqual([])
  })
})

describe('secrets', () => {
  test('no parameter value and no password in any span, even with db.query.text on', async () => {
    const { app } = await start({ otel: { queryText: true } })
    const secret = `secret-${Date.now()}`
    expect((await app.inject({ method: 'POST', url: '/insert', payload: { value: secret } })).statusCode).toBe(200)
    const insert = only(ours(sdk.spans()), 'insert notes')
    expect(insert.attributes['db.query.text']).toBe('insert into notes (body) values ($1)')
    expect(spanStrings(sdk.spans()).join('\n')).not.toContain(secret)

    // A value the server quotes back in its error message.
    expect((await app.inject({ url: '/fail', query: { value: secret } })).statusCode).toBeGreaterThanOrEqual(400)
    expect(spanStrings(ours(sdk.spans())).join('\n')).not.toContain(secret)
    // (@fastify/otel records the handler's exception, message included, on its own spans:
    // its `recordExceptions: false` turns that off.)

    expect(role.password.length).toBeGreaterThan(8)
    expect(spanStrings(sdk.spans()).join('\n')).not.toContain(role.password)
  })
})

describe('without a request span', () => {
  test('statements are roots of their own traces, still recorded', async () => {
    const { app } = await start({ fastifyOtel: undefined })
    expect(trace.getActiveSpan()).toBeUndefined()
    expect((await app.inject('/item/1')).statusCode).toBe(200)
    const statement = only(ours(sdk.spans()), 'select items')
    expect(parentOf(statement)).toBeUndefined()
  })
})

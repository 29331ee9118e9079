// From hostile probing (held): every span the OpenTelemetry plugin starts ends, whatever stops the work.
// packages/otel/README.md: "a span for each wait for a connection, each statement and each route
// transaction"; the brief: "spans end on every path (aborted request, cancelled query, error,
// stream)". Seven query forms (cursor for-await and callback, forEach, plain, simple, begin()
// with a statement running, begin() between two statements) x three ways to stop them (client
// hang-up, handlerTimeout, app.close() with a 200 ms closeTimeout): no span stays open.
// Note: the begin() block's `transaction` span ends when the app's callback returns (here after
// its 1 s sleep, outcome commit_failed), not when the abort rolled the block back.
// The existing tests cover only the onLease-block case (test/otel/on-lease-block-spans).
import { setTimeout as sleep } from 'node:timers/promises'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import { context, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { BasicTracerProvider, type ReadableSpan, type Span, type SpanProcessor } from '@opentelemetry/sdk-trace-base'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

class Tracking implements SpanProcessor {
  open = new Map<Span, string>()
  ended: ReadableSpan[] = []
  onStart(span: Span): void {
    this.open.set(span, span.name)
  }
  onEnd(span: ReadableSpan): void {
    this.open.delete(span as Span)
    this.ended.push(span)
  }
  async forceFlush() {}
  async shutdown() {}
}

let db: TestDatabase
const tracking = new Tracking()
let provider: BasicTracerProvider
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table t (id int)`
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  provider = new BasicTracerProvider({ spanProcessors: [tracking] })
  trace.setGlobalTracerProvider(provider)
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(async () => {
  trace.disable()
  context.disable()
  await db.drop()
})

type Work = (db: FastifyRequest['db']) => Promise<unknown>
const forms: Record<string, Work> = {
  'cursor for await': async (db) => {
    for await (const _rows of db`select g, pg_sleep(0.001) from generate_series(1, 100000) g`.cursor(50))
      await sleep(100)
  },
  'cursor callback': (db) =>
    db`select g from generate_series(1, 100000) g`.cursor(50, async () => {
      await sleep(100)
    }),
  forEach: (db) => db`select pg_sleep(0.01) from generate_series(1, 1000)`.forEach(() => {}),
  plain: (db) => db`select pg_sleep(10)`,
  simple: (db) => db`select pg_sleep(10) as simple`.simple(),
  begin: (db) =>
    db.begin(async (sql) => {
      await sql`select pg_sleep(10) as in_begin`
    }),
  beginGap: (db) =>
    db.begin(async (sql) => {
      await sql`select 1`
      await sleep(1_000)
      await sql`select 2`
    }),
}

describe.each(['abort', 'timeout', 'close'] as const)('%s', (stop) => {
  test.each(Object.keys(forms))('%s', async (form) => {
    tracking.ended = []
    const a = Fastify({ logger: false })
    app = a
    const applicationName = uniqueName('probe')
    await a.register(pgPoolCore, { connection: db.url, pool: { max: 1, applicationName, closeTimeout: 200 } })
    await a.register(pgPoolOtel, {})
    a.get('/work', stop === 'timeout' ? { handlerTimeout: 300 } : {}, async (request) => {
      try {
        await (forms[form] as Work)(request.db)
      } catch {}
      return 'done'
    })
    const base = await listen(a)
    const client = startRequest(`${base}/work`)
    // Started: leased, and a statement running on the server (or, between statements, one ended).
    await waitUntil(
      async () =>
        a.pgPool.stats().leased === 1 &&
        ((await db.running(applicationName, '%')) >= 1 || tracking.ended.some((s) => s.name === 'select')),
      'the work to start',
      5000,
    )
    if (stop === 'abort') client.abort()
    if (stop === 'close') {
      await a.close()
      app = undefined
    }
    await client.done
    await waitFor(() => tracking.open.size === 0, 5000)
    expect([...tracking.open.values()]).toEqual([])
  })
})

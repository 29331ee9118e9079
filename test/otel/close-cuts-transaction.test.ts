// Found by hostile probing (round 8, observability; failed before the fix): a route transaction
// still running when app.close() cut it (past closeTimeout) left its ROLLBACK span open for good and
// ended its transaction span with no outcome. Fastify runs onClose hooks in reverse order of
// registration: the tracing plugin's ran before the core's, and it stopped listening while the cut
// transaction still had its ROLLBACK to answer. Observers now stop at app.pgPools.onClosed, once
// every pool has ended (and a pool ends only once what it cut has ended).
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel, { ATTR, SPAN } from '@fastify-pg-pool/otel'
import { context, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  type Span,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen, startPost } from '../support/http.js'

class Open implements SpanProcessor {
  readonly spans = new Map<Span, string>()
  onStart(span: Span): void {
    this.spans.set(span, span.name)
  }
  onEnd(span: ReadableSpan): void {
    this.spans.delete(span as Span)
  }
  async forceFlush() {}
  async shutdown() {}
}

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
})
afterAll(async () => {
  trace.disable()
  context.disable()
  await db.drop()
})

test('app.close() cutting a route transaction: the ROLLBACK span ends and the transaction span says rollback', async () => {
  const exporter = new InMemorySpanExporter()
  const open = new Open()
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter), open] })
  trace.setGlobalTracerProvider(provider)
  const app = Fastify({ logger: false })
  const applicationName = uniqueName('obsclose')
  await app.register(pgPoolCore, {
    connection: db.url,
    pool: { max: 1, applicationName, closeTimeout: 300, pgbouncer: db.viaBouncer },
  })
  await app.register(pgPoolOtel, {})
  app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`select pg_sleep(10)`
    return { never: true }
  })
  const base = await listen(app)
  const client = startPost(`${base}/tx`, {})
  await waitUntil(
    async () => (await db.running(applicationName, '%pg_sleep(10)%')) === 1,
    'the statement to run',
    5_000,
  )
  await app.close()
  await client.done
  await waitFor(() => open.spans.size === 0, 2_000)

  expect.soft([...open.spans.values()], 'spans started and never ended').toEqual([])
  const transaction = exporter.getFinishedSpans().filter((s) => s.name === SPAN.transaction)
  expect.soft(transaction.map((s) => s.attributes[ATTR.transactionOutcome])).toEqual(['rollback'])
})

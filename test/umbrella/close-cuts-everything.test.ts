// Held attacks from hostile probing (round 8, second round): app.close() past closeTimeout with everything on (umbrella: metrics, otel, health,
// backpressure), several instances before/after the observers, work of every kind in flight.

import pgPoolCore from '@fastify-pg-pool/core'
import { ATTR, SPAN } from '@fastify-pg-pool/otel'
import { context } from '@opentelemetry/api'
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
import pgPool from 'fastify-pg-pool'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, sleep, type TestDatabase, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen, startPost, startRequest } from '../support/http.js'

class Open implements SpanProcessor {
  readonly spans = new Map<Span, string>()
  readonly ended = new Map<Span, number>()
  onStart(span: Span): void {
    this.spans.set(span, span.name)
  }
  onEnd(span: ReadableSpan): void {
    this.spans.delete(span as Span)
    this.ended.set(span as Span, (this.ended.get(span as Span) ?? 0) + 1)
  }
  async forceFlush() {}
  async shutdown() {}
}

let db: TestDatabase
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table log (note text)`
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
})
afterAll(async () => {
  context.disable()
  await db.drop()
})

const counterSum = async (registry: Registry, name: string, labels: Record<string, string>) => {
  const metric = registry.getSingleMetric(name)
  const got = await metric?.get()
  return (got?.values ?? [])
    .filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
    .reduce((sum, v) => sum + v.value, 0)
}

test('umbrella, everything on, work of every kind cut at close: every span ends once, every cut transaction counted as rollback, every lease released', async () => {
  const exporter = new InMemorySpanExporter()
  const open = new Open()
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter), open] })
  const registry = new Registry()
  const app = Fastify({ logger: false })
  const names = { early: uniqueName('c2e'), main: uniqueName('c2m'), late: uniqueName('c2l') }
  const pool = (applicationName: string) => ({
    max: 2,
    applicationName,
    closeTimeout: 400,
    pgbouncer: db.viaBouncer,
  })
  // A named instance in a child context before the umbrella, the umbrella's own, one after.
  await app.register(async (child) => {
    await child.register(pgPoolCore, { name: 'early', connection: db.url, pool: pool(names.early) })
  })
  await app.register(pgPool, {
    connection: db.url,
    pool: pool(names.main),
    metrics: { registry },
    otel: { tracerProvider: provider },
    health: {},
    backpressure: {},
  })
  await app.register(async (child) => {
    await child.register(pgPool, { name: 'late', connection: db.url, pool: pool(names.late) })
  })
  type Db = typeof app.db
  const on = (request: { db: unknown; dbs: unknown }, name?: string) =>
    (name === undefined ? request.db : (request.dbs as Record<string, unknown>)[name]) as Db

  for (const name of [undefined, 'early', 'late']) {
    const prefix = name ?? 'main'
    app.post(
      `/${prefix}/tx`,
      { config: { db: name === undefined ? { transaction: true } : { transaction: true, instance: name } } },
      async (request) => {
        const sql = on(request, name) as unknown as Db
        await sql`insert into log (note) values (${prefix})`
        await sql`select pg_sleep(10)`
        return { never: true }
      },
    )
  }
  app.get('/cursor', async (request) => {
    await (request.db as unknown as Db)`select n from generate_series(1, 100) n`.cursor(1, async () => {
      await sleep(10_000)
    })
    return { never: true }
  })
  app.get('/copy', async (request) => {
    const writable = await (request.db as unknown as Db)`copy log (note) from stdin`.writable()
    writable.write('half\n')
    await sleep(10_000)
    return { never: true }
  })
  app.get('/pipe', { config: { db: { pipeline: true } } }, async (request) => {
    await (request.db as unknown as Db)`select pg_sleep(10)`
    return { never: true }
  })
  const base = await listen(app)

  const clients = [
    startPost(`${base}/main/tx`, {}),
    startPost(`${base}/early/tx`, {}),
    startPost(`${base}/late/tx`, {}),
    startRequest(`${base}/cursor`),
  ]
  // main has max 2: the tx and the cursor hold both; the COPY and the pipelined one queue.
  await waitUntil(async () => (await db.running(names.main, '%pg_sleep(10)%')) === 1, 'main tx', 5_000)
  await waitUntil(async () => (await db.running(names.early, '%pg_sleep(10)%')) === 1, 'early tx', 5_000)
  await waitUntil(async () => (await db.running(names.late, '%pg_sleep(10)%')) === 1, 'late tx', 5_000)
  await waitUntil(() => app.pgPool.stats().leased === 2, 'cursor lease', 5_000)
  clients.push(startRequest(`${base}/copy`), startRequest(`${base}/pipe`))
  await waitUntil(() => app.pgPool.stats().waiting === 2, 'two queued', 5_000)

  const metricNames = registry.getMetricsAsArray().map((m) => m.name)
  expect(metricNames).toContain('pg_pool_transactions_total')
  // Keep the metric objects: the registry lets go of them at close.
  const kept = new Registry()
  for (const m of registry.getMetricsAsArray()) kept.registerMetric(m as never)
  const acquiredBefore = await counterSum(kept, 'pg_pool_acquires_total', { result: 'ok' })

  const started = Date.now()
  await app.close()
  const closeMs = Date.now() - started
  const statuses = await Promise.all(clients.map((c) => c.done))
  await waitFor(() => open.spans.size === 0, 2_000)

  const leaseCount = ((await kept.getSingleMetric('pg_pool_lease_seconds')?.get())?.values ?? [])
    .filter((v) => (v as { metricName?: string }).metricName === 'pg_pool_lease_seconds_count')
    .reduce((sum, v) => sum + v.value, 0)
  const acquired = await counterSum(kept, 'pg_pool_acquires_total', { result: 'ok' })
  const rollbacks = {
    primary: await counterSum(kept, 'pg_pool_transactions_total', { pool: 'primary', outcome: 'rollback' }),
    early: await counterSum(kept, 'pg_pool_transactions_total', { pool: 'early', outcome: 'rollback' }),
    late: await counterSum(kept, 'pg_pool_transactions_total', { pool: 'late', outcome: 'rollback' }),
  }
  const transactions = exporter.getFinishedSpans().filter((s) => s.name === SPAN.transaction)
  const twice = [...open.ended.entries()].filter(([, n]) => n > 1).map(([s]) => s.name)

  console.log(
    `[probe-close2] close ${closeMs} ms, statuses ${statuses.join(',')}, acquired ${acquiredBefore}->${acquired}`,
  )
  expect.soft([...open.spans.values()], 'spans never ended').toEqual([])
  expect.soft(twice, 'spans ended twice').toEqual([])
  expect
    .soft(
      transactions.map((s) => s.attributes[ATTR.transactionOutcome]),
      'transaction span outcomes',
    )
    .toEqual(['rollback', 'rollback', 'rollback'])
  expect.soft(rollbacks).toEqual({ primary: 1, early: 1, late: 1 })
  expect.soft(leaseCount, 'each acquired lease released (lease_seconds count)').toBe(acquired)
  expect.soft(registry.getMetricsAsArray().map((m) => m.name)).toEqual([])
  expect.soft(closeMs).toBeLessThan(400 + 1_000 + 3_000)
  expect.soft((await db.sql`select count(*)::int as n from log`)[0]?.n, 'nothing of the cut work committed').toBe(0)
})

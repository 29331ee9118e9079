// Held attacks from hostile probing (round 8, second round): app.close() with a frozen server (a TCP proxy that stops forwarding) still ends
// within closeTimeout + 1 s + a little (docs/faults.md), now that a pool's end also waits for the
// holders it cut; with observers on, several instances, and work of several kinds.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import pgPoolOtel from '@fastify-pg-pool/otel'
import { BasicTracerProvider, type ReadableSpan, type Span, type SpanProcessor } from '@opentelemetry/sdk-trace-base'
import Fastify, { type FastifyInstance } from 'fastify'
import { Registry } from 'prom-client'
import { afterAll, afterEach, beforeAll, beforeEach, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, uniqueName, waitUntil } from '../support/database.js'
import { listen, startPost, startRequest } from '../support/http.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { failOnProcessErrors } from './process-errors.js'

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
let proxy: TcpProxy
let current: FastifyInstance | undefined
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table log (note text)`
})
beforeEach(async () => {
  proxy = await startTcpProxy(Number(new URL(db.url).port), new URL(db.url).hostname)
})
afterEach(async () => {
  await current?.close()
  current = undefined
  await proxy.close()
})
afterAll(() => db.drop())

const closeTimeout = 300
type Db = FastifyInstance['db']

async function build(open: Open) {
  const provider = new BasicTracerProvider({ spanProcessors: [open] })
  const app = Fastify({ logger: false })
  const url = proxy.urlFor(db.url)
  const pool = {
    max: 2,
    closeTimeout,
    statementTimeout: 0,
    applicationName: uniqueName('c2f'),
    pgbouncer: db.viaBouncer,
  }
  await app.register(pgPoolCore, { connection: url, pool })
  await app.register(pgPoolMetrics, { registry: new Registry() })
  await app.register(pgPoolOtel, { tracerProvider: provider })
  await app.register(async (child) => {
    await child.register(pgPoolCore, {
      name: 'other',
      connection: url,
      pool: { ...pool, applicationName: uniqueName('c2o') },
    })
  })
  current = app
  return app
}

for (const kind of ['transaction', 'copy', 'pipelined', 'cursor', 'two-instances'] as const) {
  test(`frozen mid-${kind}: close within closeTimeout + 1 s (+ 3 s for a loaded machine), every span ends`, async () => {
    const open = new Open()
    const app = await build(open)
    app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into log (note) values ('tx')`
      await request.db`select pg_sleep(0.2)`
      return {}
    })
    app.post('/other-tx', { config: { db: { transaction: true, instance: 'other' } } }, async (request) => {
      const other = (request.dbs as unknown as Record<string, Db>).other as Db
      await other`insert into log (note) values ('other')`
      await other`select pg_sleep(0.2)`
      return {}
    })
    app.get('/copy', async (request) => {
      const writable = await (request.db as unknown as Db)`copy log (note) from stdin`.writable()
      writable.write('half\n')
      await sleep(200)
      writable.end()
      return {}
    })
    app.get('/pipe', { config: { db: { pipeline: true } } }, async (request) => {
      await request.db`select pg_sleep(0.2)`
      return {}
    })
    app.get('/cursor', async (request) => {
      await (request.db as unknown as Db)`select n, pg_sleep(0.1) from generate_series(1, 5) n`.cursor(
        1,
        async () => {},
      )
      return {}
    })
    const base = await listen(app)
    // Warm both pools.
    await app.db`select 1`
    await app.dbs.other`select 1`
    // Freeze as soon as the work is sent.
    const clients: { done: Promise<unknown> }[] = []
    proxy.setMode('blackhole')
    if (kind === 'transaction') clients.push(startPost(`${base}/tx`, {}))
    if (kind === 'copy') clients.push(startRequest(`${base}/copy`))
    if (kind === 'pipelined') clients.push(startRequest(`${base}/pipe`), startRequest(`${base}/pipe`))
    if (kind === 'cursor') clients.push(startRequest(`${base}/cursor`))
    if (kind === 'two-instances') clients.push(startPost(`${base}/tx`, {}), startPost(`${base}/other-tx`, {}))
    await waitUntil(
      () => app.pgPools.all().reduce((n, v) => n + v.stats().leased + v.stats().pipelined, 0) >= clients.length,
      'the work to hold its connections',
      5_000,
    )
    await sleep(100)
    const started = Date.now()
    await app.close()
    current = undefined
    const ms = Date.now() - started
    console.log(`[probe-close2] frozen ${kind}: close ${ms} ms`)
    await Promise.all(clients.map((c) => c.done))
    expect.soft(ms).toBeLessThan(closeTimeout + 1_000 + 3_000)
    expect.soft([...open.spans.values()]).toEqual([])
  })
}

// Round fourteen (observability probe), held: statement forms and failures earlier rounds did not
// put through the span tracker: a parameter whose serialisation throws (a build failure), a type
// parser that throws, a row transform... (app code), .cancel() of the app's own, a syntax error,
// a multi-statement unsafe() whose second statement fails, .describe(), .simple(), .values(),
// .raw(), a statement never awaited, a statement past statement_timeout, a request that throws
// between two statements. Every span started ends once; none carries a parameter value.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import { SpanStatusCode } from '@opentelemetry/api'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { spanStrings, startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor, waitUntil } from '../../../support/database.js'
import { tracedProvider } from './kit.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe('create table t (v int); insert into t select i from generate_series(1, 50) i')
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

test('every span started by an exotic statement form ends once, no value in any', async () => {
  const traced = tracedProvider()
  const app = Fastify()
  await app.register(pgPoolCore, {
    connection: db.url,
    pool: { max: 2, applicationName: uniqueName('forms'), statementTimeout: 30_000 },
  })
  await app.register(pgPoolOtel, { tracerProvider: traced.provider, queryText: true, metrics: false })
  const secret = (n: number) => `secret-param-${n}`
  app.get('/build', async (request) => {
    const bad = {
      toJSON() {
        throw new Error(secret(1))
      },
    }
    await request.db`select ${bad as never}::jsonb as j`
    return {}
  })
  app.get('/cancel', async (request) => {
    const q = request.db`select pg_sleep(5), ${secret(2)}::text`
    setTimeout(() => void q.cancel(), 200)
    await q
    return {}
  })
  app.get('/syntax', async (request) => {
    await request.db.unsafe(`selec '${secret(3)}'`)
    return {}
  })
  app.get('/multi', async (request) => {
    await request.db.unsafe(`select 1; select '${secret(4)}'::int`)
    return {}
  })
  app.get('/describe', async (request) => {
    const d = await request.db`select v from t where v = ${secret(5)}`.describe()
    return { n: d.columns.length }
  })
  app.get('/simple', async (request) => {
    await request.db`select 1 as one`.simple()
    return {}
  })
  app.get('/values', async (request) => (await request.db`select v from t where v < ${3}`.values()).length)
  app.get('/raw', async (request) => (await request.db`select v from t where v < ${3}`.raw()).length)
  app.get('/unawaited', async (request) => {
    void request.db`select ${secret(6)}::text`
    return {}
  })
  app.get('/throw', async (request) => {
    await request.db`select ${secret(7)}::text`
    throw new Error('handler failed')
  })
  app.get('/timeout', async (request) => {
    await request.db`set local statement_timeout = 100`.catch(() => {})
    await request.db.begin(async (tx) => {
      await tx`set local statement_timeout = 100`
      await tx`select pg_sleep(2), ${secret(8)}::text`
    })
    return {}
  })
  try {
    for (const url of [
      '/build',
      '/cancel',
      '/syntax',
      '/multi',
      '/describe',
      '/simple',
      '/values',
      '/raw',
      '/unawaited',
      '/throw',
      '/timeout',
    ]) {
      const reply = await app.inject(url)
      expect(reply.statusCode, url).toBeGreaterThanOrEqual(200)
      await waitUntil(() => app.pgPool.stats().leased === 0, `lease of ${url} back`, 15_000)
    }
    await waitFor(() => traced.tracking.open.size === 0, 3_000)
    expect([...traced.tracking.open.values()]).toEqual([])
  } finally {
    await app.close()
  }
  expect([...traced.tracking.open.values()]).toEqual([])
  expect([...traced.tracking.endCalls.values()].filter((n) => n !== 1)).toEqual([])
  const text = spanStrings(traced.exporter.getFinishedSpans()).join('\n')
  for (const n of [1, 2, 5, 6, 7, 8]) expect(text.includes(secret(n)), secret(n)).toBe(false)
  // Failures named by SQLSTATE or code, never by message (the build failure's quotes a value).
  const failed = traced
    .ours()
    .filter((s) => s.status.code === SpanStatusCode.ERROR)
    .map((s) => String(s.attributes['error.type']))
    .sort()
  expect(failed).toEqual(['22P02', '42601', '57014', '57014', '_OTHER'])
})

// Round sixteen (otel probe), held: statements run with unsafe() whose literals, comments and
// dollar-quoted bodies carry secrets, in every lexical form PostgreSQL has (E'' strings with
// escaped quotes and backslashes, doubled quotes, nested block comments, tagged dollar quotes,
// U&'' strings, quoted identifiers with doubled quotes, non-ASCII identifiers, a statement of
// 50 kB, several statements in one message), against a real server (each statement runs). Tried:
// a secret in any span name or attribute, or in any metric attribute, with queryText off. None
// found; the span names are the tables written, in order.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel from '@fastify-pg-pool/otel'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create table plain (v text); create table "we""ird" (v text); create table städte (v text)`)
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

const statements: [string, string][] = [
  [`select v from plain where v = E'it\\'s from SECRET_e \\\\' || 'x'`, 'select plain'],
  [`select v from plain where v = 'a''b from SECRET_doubled'`, 'select plain'],
  [`select /* outer /* inner from SECRET_nested */ from SECRET_outer */ v from plain`, 'select plain'],
  [`select $tag$ from SECRET_dollar $$ still $tag$ as v from plain`, 'select plain'],
  [`select U&'\\0041 from SECRET_unicode' as v from plain`, 'select plain'],
  [`select v from "we""ird" where v <> 'from SECRET_q' -- from SECRET_line`, 'select "we""ird"'],
  [`insert into städte (v) values ('from SECRET_ümlaut') returning v`, 'insert städte'],
  [
    `select v from plain where v in (${Array.from({ length: 5000 }, (_, i) => `'SECRET_${i}'`).join(',')})`,
    'select plain',
  ],
  [`select 1 from plain; select 'from SECRET_second' from städte`, 'select plain select städte'],
]

test('secrets in every lexical form: none in spans or metrics, names as written', async () => {
  const app = Fastify()
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 1 } })
  await app.register(pgPoolOtel, {
    tracerProvider: sdk.tracerProvider,
    meterProvider: sdk.meterProvider,
  })
  app.post<{ Body: { text: string } }>('/run', async (request) => {
    await request.db.unsafe(request.body.text)
    return { ok: true }
  })
  try {
    for (const [text] of statements) {
      const reply = await app.inject({ method: 'POST', url: '/run', payload: { text } })
      expect(reply.statusCode, text).toBe(200)
    }
    const spans = sdk.spans()
    expect(spans.map((s) => s.name)).toEqual(statements.map(([, name]) => name))
    const collected = await sdk.collect()
    const everything = JSON.stringify({
      spans: spans.map((s) => ({ name: s.name, attributes: s.attributes, events: s.events, status: s.status })),
      metrics: collected.scopeMetrics.flatMap((scope) =>
        scope.metrics.flatMap((metric) => metric.dataPoints.map((point) => point.attributes)),
      ),
    })
    expect(everything).not.toMatch(/SECRET/)
  } finally {
    await app.close()
  }
})

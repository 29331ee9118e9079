// Round sixteen (otel probe): a FROM list whose item has parentheses (a set-returning function,
// a subquery, LATERAL) lost every table after it: `select ... from generate_series(1, 3) g,
// items` gave the span name and `db.query.summary` `select`, as if it read no table, and
// `from (select ... from a) s, b` gave `select select a` without b. The conventions' summary names
// the tables the statement reads, in the order written; dashboards group by it.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel, { ATTR, summarizeQuery } from '@fastify-pg-pool/otel'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe('create table items (id int); create table orders (id int)')
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

test('a route reading a function and a table: its span is named by the table', async () => {
  const app = Fastify()
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 1 } })
  await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
  app.get('/report', async (request) => {
    await request.db`select g, i.id from generate_series(1, 3) g, items i where i.id = g`
    return { ok: true }
  })
  try {
    expect((await app.inject('/report')).statusCode).toBe(200)
    expect(sdk.spans().map((s) => [s.name, s.attributes[ATTR.dbQuerySummary]])).toEqual([
      ['select items', 'select items'],
    ])
  } finally {
    await app.close()
  }
})

test.each([
  ['select * from (select * from items) s, orders', 'select select items orders'],
  ['select * from items, lateral unnest($1::int[]) with ordinality as u(v, n), orders', 'select items orders'],
  ['select * from items, (select 1) x(y), orders join b on true', 'select items select orders b'],
  ['select * from (select * from f(1) g, items) s, orders', 'select select items orders'],
  ['select * from f(1) as g(a int, b text), items', 'select items'],
])('%s', (text, summary) => {
  expect(summarizeQuery(text).summary).toBe(summary)
})

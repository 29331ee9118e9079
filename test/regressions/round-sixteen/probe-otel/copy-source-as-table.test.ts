// Round sixteen (otel probe): a COPY FROM STDIN (the bulk load every import route runs) had its
// span named `copy imports stdin`, and `db.query.summary` on `db.client.operation.duration` said
// the same: STDIN read as a second table, as PROGRAM did for `COPY ... FROM PROGRAM '...'`. The
// summary is the operation and the tables it touches (the conventions'); a COPY's FROM names its
// source, never a table. What the user should see: `copy imports`.
import { pipeline } from 'node:stream/promises'
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
  await db.sql.unsafe('create table imports (id int, name text)')
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

test('a COPY FROM STDIN on a route: its span is named by its table alone', async () => {
  const app = Fastify()
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 2 } })
  await app.register(pgPoolOtel, { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider })
  app.post('/import', async (request) => {
    const writable = await request.db`copy imports (id, name) from stdin`.writable()
    await pipeline(async function* () {
      yield '1\tone\n2\ttwo\n'
    }, writable)
    return { ok: true }
  })
  try {
    expect((await app.inject({ method: 'POST', url: '/import' })).statusCode).toBe(200)
    const copies = sdk.spans().filter((s) => s.attributes[ATTR.dbOperationName] === 'copy')
    expect(copies.map((s) => [s.name, s.attributes[ATTR.dbQuerySummary]])).toEqual([['copy imports', 'copy imports']])
  } finally {
    await app.close()
  }
})

test.each([
  ['COPY imports FROM STDIN WITH (FORMAT csv)', 'COPY imports'],
  ["copy imports from program 'gunzip -c /data/secret-path.gz'", 'copy imports'],
  ["copy imports from '/var/lib/import.csv'", 'copy imports'],
  ['copy (select * from a join b on true) to stdout', 'copy select a b'],
  ['copy imports from stdin; select * from stdin_log', 'copy imports select stdin_log'],
])('%s', (text, summary) => {
  expect(summarizeQuery(text).summary).toBe(summary)
})

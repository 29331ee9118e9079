import { afterEach, beforeAll, expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../../../support/database.js'

// What the user does: a route filters on a date column with a query-string value made a Date
// (`where at >= ${new Date(request.query.since)}`); a client sends `?since=garbage` (an Invalid
// Date: postgres.js's date serializer throws RangeError: Invalid time value), and sends it again.
// The same with a value `${x}` cannot make text (an object without a prototype) for a boolean,
// which the pool's boolean serializer (ac5b448) now writes as its text.
// What they should get: the README's promise for a value whose serializer throws: "fails at once
// with a 500 and that error, on its own request only", each time; the next good request a 200.
// What they got: the first request's 500 came while postgres.js was still reading the statement's
// description (it had failed building its Bind there): the pool took the connection for free,
// sent the session reset and the second request's statement into postgres.js's own queue, where
// the second statement (prepared by then) failed to build behind the reset. postgres.js gave the
// reset its error, and left the statement unsent: the second request hung until statementTimeout
// (30 s by default) and got a 503 FST_PG_POOL_CONNECTION_LOST, its connection killed.

let db: TestDatabase
let current: TestApp | undefined
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table events (id serial primary key, at timestamptz not null default now(), flag boolean)`
  await db.sql`insert into events (at) values ('2024-01-01'), ('2025-01-01')`
  return async () => db.drop()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})

for (const kind of ['date', 'boolean'] as const) {
  test(`a ${kind} value whose serializer throws, twice on one connection: two 500s of their own, then a 200`, async () => {
    // A statement timeout past what the requests need: a request left unanswered fails by it (503).
    current = await coreApp(db.url, { max: 1, statementTimeout: 8_000, acquireTimeout: 20_000 })
    const { app } = current
    app.get<{ Querystring: { since?: string } }>('/events', async (request) => {
      // A value the serializer cannot write: an invalid date, or an object without a prototype
      // (`${x}` throws) given to a boolean column.
      const value = kind === 'date' ? new Date(String(request.query.since)) : Object.create(null)
      const [row] =
        kind === 'date'
          ? await request.db`select count(*)::int as n from events where at >= ${value}`
          : await request.db`select count(*)::int as n from events where flag = ${value}`
      return row
    })
    const outcomes: { status: number; code?: unknown }[] = []
    for (let i = 0; i < 3; i++) {
      const res = await app.inject(`/events?since=garbage&try=${i}`)
      outcomes.push({ status: res.statusCode, code: res.json().code })
    }
    expect(outcomes.map((o) => o.status)).toEqual([500, 500, 500])
    expect(outcomes.every((o) => !String(o.code ?? '').startsWith('FST_PG_POOL_'))).toBe(true)
    if (kind === 'date') {
      const ok = await app.inject('/events?since=2024-06-01')
      expect({ status: ok.statusCode, body: ok.json() }).toEqual({ status: 200, body: { n: 1 } })
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  }, 30_000)
}

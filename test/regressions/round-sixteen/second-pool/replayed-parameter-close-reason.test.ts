// Round sixteen (second-pool): behind PgBouncer (`pool.pgbouncer: true`), this round's fix retires
// a pool connection on which a request changed a parameter PgBouncer replays on its client
// connection (TimeZone, DateStyle, client_encoding, standard_conforming_strings,
// application_name). What the user does: an app whose route runs a plain `SET TimeZone` (or a
// `SET` in a transaction that commits), watched with @fastify-pg-pool/metrics.
// What the metrics README says: pg_pool_connections_closed_total's `error` reason is a
// "connection-level error".
// What they got: every such retirement counted as reason="error": the dashboard's closes by
// reason (examples/observability) showed connection errors rising with the database and the
// network healthy, one per request that set a time zone. The retirement is a close reason of its
// own (`parameters`), counted once, and a request that changes nothing is not counted at all.
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../../../metrics/exposition.js'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../../support/database.js'
import { type PgBouncer, startPgBouncer } from '../../../support/pgbouncer.js'

let db: TestDatabase
let bouncer: PgBouncer
let current: TestApp
beforeAll(async () => {
  db = await createTestDatabase()
  bouncer = await startPgBouncer({
    upstream: db.directUrl,
    defaultPoolSize: 1,
    settings: { server_reset_query_always: 1 },
  })
  current = await coreApp(bouncer.via(db.directUrl), { max: 1, pgbouncer: true })
  await current.app.register(pgPoolMetrics)
  current.app.post('/set', async (request) => {
    await request.db.unsafe((request.body as { statement: string }).statement)
    return { ok: true }
  })
  current.app.get('/show', async (request) => (await request.db`select current_setting('TimeZone') as tz`)[0])
  await current.app.ready()
})
afterAll(async () => {
  await current?.app.close()
  await bouncer?.stop()
  await db?.drop()
})

async function closedByReason(): Promise<Record<string, number>> {
  const scrape = parseExposition((await current.app.inject('/metrics')).body)
  return Object.fromEntries(
    scrape
      .find('pg_pool_connections_closed_total', { pool: 'primary' })
      .map((sample) => [sample.labels.reason, sample.value]),
  )
}

test('a connection retired for a replayed parameter is counted as reason="parameters", not as an error', async () => {
  const clean = (await current.app.inject('/show')).json()
  const before = await closedByReason()
  expect(before.error).toBe(0)
  // Sets nothing PgBouncer replays: no close.
  const local = await current.app.inject({
    method: 'POST',
    url: '/set',
    payload: { statement: "begin; set local timezone = 'Asia/Tokyo'; commit" },
  })
  expect(local.statusCode, local.body).toBe(200)
  const set = await current.app.inject({
    method: 'POST',
    url: '/set',
    payload: { statement: "set timezone = 'Asia/Tokyo'" },
  })
  expect(set.statusCode, set.body).toBe(200)
  expect((await current.app.inject('/show')).json()).toEqual(clean)
  let after: Record<string, number> = {}
  await waitUntil(async () => {
    after = await closedByReason()
    return Object.values(after).reduce((sum, n) => sum + n, 0) >= 1
  }, 'the retirement counted')
  expect(after.error, 'a request that set a time zone counted as a connection error').toBe(0)
  expect(after).toEqual({ ...before, parameters: 1 })
})

test('IntervalStyle (replayed by PgBouncer 1.20 and later) retires the connection too, with reason="parameters"', async () => {
  const before = await closedByReason()
  const set = await current.app.inject({
    method: 'POST',
    url: '/set',
    payload: { statement: "set intervalstyle = 'sql_standard'" },
  })
  expect(set.statusCode, set.body).toBe(200)
  let after: Record<string, number> = {}
  await waitUntil(async () => {
    after = await closedByReason()
    return (after.parameters ?? 0) > (before.parameters ?? 0)
  }, 'the retirement counted')
  expect(after).toEqual({ ...before, parameters: (before.parameters ?? 0) + 1 })
  expect((await current.app.inject('/show')).statusCode).toBe(200)
})

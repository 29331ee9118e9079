import postgres from 'postgres'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../../../support/database.js'
import { type PgBouncer, startPgBouncer } from '../../../support/pgbouncer.js'

// HELD (probe-third-api): dbf59f8 stopped counting 08P01 at ERROR as a lost connection when the
// server sent it (a Bind with too few values: a `file` field, no `where`). PgBouncer's own 08P01
// (query_wait_timeout, no `file`, and PgBouncer closes the client) must still retire the
// connection and answer 503 CONNECTION_LOST (postgres.js reports it as CONNECTION_CLOSED; the
// message says the statement may have run, though it never reached a server: cautious, not wrong); the server's 08P01 through PgBouncer is a 500 that keeps
// the session; a function's RAISE SQLSTATE '08P01' (a `where`) counts as a lost connection, as a
// raised class-08 state did before (round thirteen's onLease 08006 test), the README's "class 08
// otherwise".

let db: TestDatabase
let bouncer: PgBouncer | undefined
let current: TestApp | undefined

beforeAll(async () => {
  db = await createTestDatabase()
  // Needs a pgbouncer binary: vitest.config.ts leaves this file out without one (CI requires it).
  bouncer = await startPgBouncer({
    upstream: db.directUrl,
    defaultPoolSize: 1,
    settings: { query_wait_timeout: 1, server_check_delay: 0 },
  })
  await db.sql.unsafe(
    `create function boom() returns int language plpgsql as $$ begin raise sqlstate '08P01' using message = 'raised'; end $$`,
  )
}, 60_000)
afterAll(async () => {
  await current?.app.close()
  await bouncer?.stop()
  await db.drop()
})

test("PgBouncer's query_wait_timeout (08P01) retires the connection; the server's 08P01 does not", async () => {
  current = await coreApp((bouncer as PgBouncer).via(db.directUrl), { max: 1, pgbouncer: true })
  const { app } = current
  app.get('/one', async (request) => request.db`select 1 as one`)
  app.get('/few', async (request) => request.db.unsafe('select $1::int + $2::int as s', [1]))
  expect((await app.inject('/one')).statusCode).toBe(200)
  const few = await app.inject('/few')
  expect(few.statusCode).toBe(500)
  expect(few.json().code).toBe('08P01')
  expect((await app.inject('/one')).statusCode).toBe(200)
  // The only server connection pinned by a transaction of another client.
  const holder = postgres((bouncer as PgBouncer).via(db.directUrl), { max: 1, prepare: false, onnotice: () => {} })
  let isPinned = () => {}
  const pinning = new Promise<void>((resolve) => {
    isPinned = resolve
  })
  const pinned = holder.begin(async (sql) => {
    await sql`select 1`
    isPinned()
    await new Promise((resolve) => setTimeout(resolve, 4_000))
  })
  try {
    await pinning
    const waited = await app.inject('/one')
    expect(waited.statusCode).toBe(503)
    expect(waited.json().code).toBe('FST_PG_POOL_CONNECTION_LOST')
  } finally {
    await pinned
    await holder.end({ timeout: 1 })
  }
  expect((await app.inject('/one')).statusCode).toBe(200)
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
}, 60_000)

test('a RAISE SQLSTATE 08P01 is a lost connection (503, replaced); too few values keeps it (500)', async () => {
  current = await coreApp(db.url, { max: 1 })
  const { app } = current
  app.get('/pid', async (request) => (await request.db`select pg_backend_pid() as pid`)[0])
  app.get('/boom', async (request) => request.db`select boom()`)
  app.get('/few', async (request) => request.db.unsafe('select $1::int + $2::int as s', [1]))
  const first = (await app.inject('/pid')).json().pid
  const few = await app.inject('/few')
  expect(few.statusCode).toBe(500)
  expect((await app.inject('/pid')).json().pid).toBe(first)
  const boom = await app.inject('/boom')
  expect(boom.statusCode).toBe(503)
  expect(boom.json().code).toBe('FST_PG_POOL_CONNECTION_LOST')
  expect((await app.inject('/pid')).json().pid).not.toBe(first)
  await app.close()
  current = undefined
}, 60_000)

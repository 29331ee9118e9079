// DEFECT (probe-pgbouncer, medium). What the user does: `pool.pgbouncer: true` behind PgBouncer
// in transaction mode, `statementTimeout: 1000`; a plain (autocommit) route runs an UPDATE that
// waits on a row lock another session holds. The docs (docs/pgbouncer-and-sizing.md) say
// statement_timeout is not sent as a startup parameter there, "the client-side deadline
// (statementTimeout + 1 s) still applies". What they see: at the deadline the request answers
// 503 FST_PG_POOL_QUERY_TIMEOUT "The database did not answer within 1000 ms" with Retry-After
// (retry me), the pool drops its client connection (pool.ts:183-186 `pastDeadline`: end, no
// cancel), and the UPDATE goes on running on the server: nothing stops it (no server-side
// statement_timeout, no cancel request, PgBouncer only closes its server socket, which a backend
// waiting on a lock never reads). When the lock is released the UPDATE commits: the client was
// told to retry work that was done, and a retry applies it twice. Against the server directly the
// same route gets the same 503 and nothing is committed (the server's statement_timeout ends the
// statement). What they should see: the statement stopped when the pool gives up on it: at the
// deadline send a cancel request first (PgBouncer forwards it to the server connection its client
// is linked to) and only then end the connection, or answer a non-retryable "outcome unknown"
// error when no cancel could be confirmed; and the docs saying that, without a role/database
// statement_timeout, the server keeps running a statement the client gave up on.
// Failed on a718e61: the UPDATE of the request answered 503 (retry) committed after the answer: expected 1 to be +0.
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../../support/database.js'
import { type Bouncer, startBouncer } from './bouncer-kit.js'

let db: TestDatabase
let bouncer: Bouncer
let current: TestApp
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table counter (id int primary key, n int not null)`
  await db.sql`insert into counter values (1, 0)`
  bouncer = await startBouncer(db.directUrl, { default_pool_size: 2 })
  current = await coreApp(bouncer.via(db.directUrl), { max: 1, pgbouncer: true, statementTimeout: 1_000 })
  current.app.post('/bump', async (request) => {
    const [row] = await request.db<{ n: number }[]>`update counter set n = n + 1 where id = 1 returning n`
    return row
  })
  await current.app.ready()
})
afterAll(async () => {
  await current?.app.close()
  await bouncer?.stop()
  await db?.drop()
})

describe('the client-side deadline behind PgBouncer (no server-side statement_timeout)', () => {
  test('a write answered with a retryable 503 at the deadline is not committed afterwards', async () => {
    const locker = postgres(db.directUrl, { max: 1, onnotice: () => {} })
    const reserved = await locker.reserve()
    let reply: Awaited<ReturnType<typeof current.app.inject>>
    try {
      await reserved`begin`
      await reserved`select * from counter where id = 1 for update`
      reply = await current.app.inject({ method: 'POST', url: '/bump' })
      expect(reply.statusCode, reply.body).toBe(503)
      expect(reply.json().code).toBe('FST_PG_POOL_QUERY_TIMEOUT')
      expect(reply.headers['retry-after']).toBe('1')
    } finally {
      await reserved`rollback`
      reserved.release()
      await locker.end({ timeout: 1 })
    }
    // Whatever still runs of the request's UPDATE finishes now that the lock is free.
    await waitFor(
      async () =>
        (
          await db.admin<{ n: number }[]>`
            select count(*)::int as n from pg_stat_activity where query like 'update counter%' and pid <> pg_backend_pid()`
        )[0]?.n === 0,
      5_000,
    )
    const [row] = await db.sql<{ n: number }[]>`select n from counter where id = 1`
    expect(row?.n, 'the UPDATE of the request answered 503 (retry) committed after the answer').toBe(0)
  })
})

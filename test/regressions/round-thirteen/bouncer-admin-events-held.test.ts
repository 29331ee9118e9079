// HELD (probe-pgbouncer): PgBouncer's own failure modes in front of an app with
// `pool.pgbouncer: true`, each answered with a coded, retryable 503 (Retry-After, no address or
// port in the body), never a 2xx for uncommitted work, never a hang, and the app serving again
// once PgBouncer does:
// - PAUSE: a plain request (its statement waits inside PgBouncer) answers 503
//   FST_PG_POOL_QUERY_TIMEOUT after statementTimeout + 1 s; /health/ready answers 503 `fail`
//   within its pingTimeout; after RESUME both pass;
// - KILL of the database between a route transaction's insert and its COMMIT: no 2xx, a coded
//   5xx, nothing committed; after RESUME the next request is served;
// - query_wait_timeout (PgBouncer's own error, 08P01, then it closes the client): 503
//   FST_PG_POOL_CONNECTION_LOST with Retry-After, for a plain route and a transaction route;
// - max_client_conn below the pool's max: the connections PgBouncer refuses (08P01 "no more
//   connections allowed") are retried by the pool and every request is served.
import pgPoolHealth from '@fastify-pg-pool/health'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { deferred, failOnProcessErrors } from '../../faults/process-errors.js'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'
import { type Bouncer, startBouncer } from './bouncer-kit.js'

failOnProcessErrors()
let db: TestDatabase
let database: string
const apps: TestApp[] = []
const bouncers: Bouncer[] = []
beforeAll(async () => {
  db = await createTestDatabase()
  database = new URL(db.directUrl).pathname.slice(1)
  await db.sql`create table note (body text not null)`
})
afterAll(async () => {
  for (const { app } of apps) await app.close()
  for (const bouncer of bouncers) await bouncer.stop()
  await db?.drop()
})

async function bouncerFor(settings: Record<string, string | number>): Promise<Bouncer> {
  const bouncer = await startBouncer(db.directUrl, settings)
  bouncers.push(bouncer)
  return bouncer
}

async function appOn(bouncer: Bouncer, pool: Record<string, unknown> = {}): Promise<TestApp> {
  const current = await coreApp(bouncer.via(db.directUrl), { pgbouncer: true, ...pool })
  apps.push(current)
  return current
}

function expectRetryable(reply: { statusCode: number; headers: Record<string, unknown>; body: string }, code: RegExp) {
  expect(reply.statusCode, reply.body).toBe(503)
  expect(reply.headers['retry-after']).toBe('1')
  expect((JSON.parse(reply.body) as { code: string }).code).toMatch(code)
  expect(reply.body).not.toMatch(/127\.0\.0\.1|localhost|:\d{4,5}\b/)
}

describe('PgBouncer admin events and limits, pool.pgbouncer: true', () => {
  test('PAUSE: requests and readiness answer 503 in bounded time; RESUME: both pass', async () => {
    const bouncer = await bouncerFor({ default_pool_size: 2 })
    const { app } = await appOn(bouncer, { max: 2, statementTimeout: 1_000, acquireTimeout: 1_000 })
    await app.register(pgPoolHealth, { cacheTime: 0, pingTimeout: 500 })
    app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
    await app.ready()
    expect((await app.inject('/q')).statusCode).toBe(200)
    await bouncer.admin(`PAUSE ${database}`)
    try {
      const [plain, ready] = await Promise.all([app.inject('/q'), app.inject('/health/ready')])
      expectRetryable(plain, /^FST_PG_POOL_(QUERY_TIMEOUT|ACQUIRE_TIMEOUT)$/)
      expect(ready.statusCode).toBe(503)
      expect(ready.json().status).toBe('fail')
    } finally {
      await bouncer.admin(`RESUME ${database}`)
    }
    const after = await app.inject('/q')
    expect(after.statusCode, after.body).toBe(200)
    expect((await app.inject('/health/ready')).statusCode).toBe(200)
  })

  test('KILL between the insert and the COMMIT of a route transaction: no 2xx, nothing committed', async () => {
    const bouncer = await bouncerFor({ default_pool_size: 2 })
    const { app } = await appOn(bouncer, { max: 1, statementTimeout: 2_000, acquireTimeout: 2_000 })
    const wrote = deferred()
    const proceed = deferred()
    app.post('/w', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values ('killed')`
      wrote.resolve()
      await proceed.promise
      return { ok: true }
    })
    app.get('/n', async (request) => (await request.db`select count(*)::int as n from note`)[0])
    await app.ready()
    const pending = app.inject({ method: 'POST', url: '/w' })
    await wrote.promise
    await bouncer.admin(`KILL ${database}`)
    proceed.resolve()
    const reply = await pending
    await bouncer.admin(`RESUME ${database}`)
    expect(reply.statusCode, reply.body).toBeGreaterThanOrEqual(500)
    expect(reply.body).not.toContain('"ok":true')
    expect(reply.json().code).toMatch(/^FST_PG_POOL_/)
    const [counted] = await db.sql<{ n: number }[]>`select count(*)::int as n from note where body = 'killed'`
    expect(counted?.n).toBe(0)
    const next = await app.inject('/n')
    expect(next.statusCode, next.body).toBe(200)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
  })

  test("query_wait_timeout: PgBouncer's error is a coded, retryable 503 for a plain and a transaction route", async () => {
    const bouncer = await bouncerFor({ default_pool_size: 1, query_wait_timeout: 1 })
    const { app } = await appOn(bouncer, { max: 2 })
    app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
    app.post('/t', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values ('waited')`
      return { ok: true }
    })
    await app.ready()
    // Warm: the app's two client connections open while PgBouncer has a server connection free.
    await Promise.all([app.inject('/q'), app.inject('/q')])
    // The only server connection is busy in someone else's transaction.
    const client = postgres(bouncer.via(db.directUrl), { max: 1, prepare: false, onnotice: () => {} })
    const reserved = await client.reserve()
    try {
      await reserved`begin`
      await reserved`select 1`
      const [plain, tx] = await Promise.all([app.inject('/q'), app.inject({ method: 'POST', url: '/t' })])
      expectRetryable(plain, /^FST_PG_POOL_(CONNECTION_LOST|CONNECT_FAILED)$/)
      expectRetryable(tx, /^FST_PG_POOL_(CONNECTION_LOST|CONNECT_FAILED)$/)
    } finally {
      await reserved`rollback`.catch(() => {})
      reserved.release()
      await client.end({ timeout: 1 })
    }
    const [counted] = await db.sql<{ n: number }[]>`select count(*)::int as n from note where body = 'waited'`
    expect(counted?.n).toBe(0)
    expect((await app.inject('/q')).statusCode).toBe(200)
  })

  test('max_client_conn below the pool max: every request is served', async () => {
    const bouncer = await bouncerFor({ default_pool_size: 4, max_client_conn: 2 })
    const { app } = await appOn(bouncer, { max: 4 })
    app.get('/s', async (request) => (await request.db`select pg_sleep(0.2), 1 as one`)[0])
    await app.ready()
    const replies = await Promise.all(Array.from({ length: 6 }, () => app.inject('/s')))
    expect(replies.map((reply) => reply.statusCode)).toEqual(Array(6).fill(200))
  })
})

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { deferred, failOnProcessErrors } from '../faults/process-errors.js'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Held attacks from hostile probing (round 8, the server acting at bad moments).
// Deadlocks, serialization failures, locks held by another session, and a COMMIT that the server
// works on for a while (a deferred constraint trigger) while something happens to it.

let db: TestDatabase
let current: TestApp | undefined
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table t (id int primary key, v int)`
  await db.sql`create table slow (id int primary key)`
  await db.sql.unsafe(`create function sleepy() returns trigger language plpgsql as $$
    begin perform pg_sleep(1.5); return null; end $$`)
  await db.sql.unsafe(`create constraint trigger slow_commit after insert on slow
    deferrable initially deferred for each row execute function sleepy()`)
  await db.sql`create table uniq (k int, constraint uniq_k unique (k) deferrable initially deferred)`
})
beforeEach(async () => {
  await db.sql`truncate t, slow, uniq`
  await db.sql`insert into t values (1, 0), (2, 0)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const values = async () => (await db.sql`select v from t order by id`).map((r) => r.v as number)

describe('deadlock and serialization failure in route transactions', () => {
  for (const swallow of [false, true]) {
    test(`deadlock (${swallow ? 'handler swallows the error' : 'error thrown'}): loser gets a coded error, nothing half-committed`, async () => {
      current = await coreApp(db.url, { max: 2, statementTimeout: 10_000 })
      const { app } = current
      const firstDone = [deferred(), deferred()]
      const both = Promise.all(firstDone.map((d) => d.promise))
      const route = (first: number, second: number, add: number, i: number) =>
        app.post(`/r${i}`, { config: { db: { transaction: true } } }, async (request) => {
          await request.db`update t set v = v + ${add} where id = ${first}`
          firstDone[i]?.resolve()
          await both
          try {
            await request.db`update t set v = v + ${add} where id = ${second}`
          } catch (error) {
            if (!swallow) throw error
            return { swallowed: (error as { code?: string }).code }
          }
          return { ok: true }
        })
      route(1, 2, 10, 0)
      route(2, 1, 100, 1)
      app.get(
        '/v',
        async (request) =>
          (await request.db`select (select sum(v)::int from t) as s, txid_current_if_assigned() as xid`)[0],
      )
      await app.ready()
      const [a, b] = await Promise.all([
        app.inject({ method: 'POST', url: '/r0' }),
        app.inject({ method: 'POST', url: '/r1' }),
      ])
      const statuses = [a.statusCode, b.statusCode].sort()
      const loser = a.statusCode === 200 ? b : a
      expect(statuses[0], `${a.body} ${b.body}`).toBe(200)
      if (swallow) {
        expect(loser.statusCode, loser.body).toBe(500)
        expect(loser.json().code).toBe('FST_PG_POOL_COMMIT_FAILED')
      } else {
        expect(loser.statusCode, loser.body).toBe(503)
        expect(loser.json().code).toBe('40P01')
        expect(loser.headers['retry-after']).toBe('1')
      }
      expect(loser.body).not.toMatch(/process \d+|transaction \d+/)
      const winnerAdd = a.statusCode === 200 ? 10 : 100
      expect(await values()).toEqual([winnerAdd, winnerAdd])
      expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
      // The loser's connection is reused: nothing aborted is left on it.
      for (let i = 0; i < 4; i++) {
        const v = await app.inject({ method: 'GET', url: '/v' })
        expect(v.statusCode, v.body).toBe(200)
        expect(v.json().xid).toBe(null)
      }
    })
  }

  test('serializable write skew: exactly one commits, the other gets a coded failure', async () => {
    current = await coreApp(db.url, { max: 2, statementTimeout: 10_000 })
    const { app } = current
    const outcomes: string[] = []
    app.pgPool.on('transaction', (outcome: string) => outcomes.push(outcome))
    const read = [deferred(), deferred()]
    const both = Promise.all(read.map((d) => d.promise))
    const route = (readId: number, writeId: number, i: number) =>
      app.post(`/s${i}`, { config: { db: { transaction: { isolation: 'serializable' } } } }, async (request) => {
        const [row] = await request.db`select v from t where id = ${readId}`
        read[i]?.resolve()
        await both
        await request.db`update t set v = ${(row?.v as number) + 1} where id = ${writeId}`
        return { ok: true }
      })
    route(2, 1, 0)
    route(1, 2, 1)
    await app.ready()
    const [a, b] = await Promise.all([
      app.inject({ method: 'POST', url: '/s0' }),
      app.inject({ method: 'POST', url: '/s1' }),
    ])
    const ok = [a, b].filter((r) => r.statusCode === 200)
    const failed = [a, b].filter((r) => r.statusCode !== 200)
    expect(ok.length, `${a.body} ${b.body}`).toBe(1)
    expect(failed[0]?.statusCode).toBeGreaterThanOrEqual(500)
    expect(['40001', 'FST_PG_POOL_COMMIT_FAILED']).toContain(failed[0]?.json().code)
    expect((await values()).sort()).toEqual([0, 1])
    expect(app.pgPool.stats()).toMatchObject({ leased: 0 })
    expect(await waitFor(() => outcomes.length === 2)).toBe(true)
  })
})

describe('a table lock held by another session', () => {
  for (const transaction of [false, true]) {
    test(`past statementTimeout (${transaction ? 'route transaction' : 'plain'}): 503 QUERY_TIMEOUT, that statement only, connection clean`, async () => {
      current = await coreApp(db.url, { max: 1, statementTimeout: 800, acquireTimeout: 3_000 })
      const { app, applicationName } = current
      app.post('/w', { config: { db: { transaction } } }, async (request) => {
        await request.db`insert into uniq values (42)`
        await request.db`update t set v = v + 1 where id = 1`
        return { ok: true }
      })
      app.get(
        '/pid',
        async (request) => (await request.db`select pg_backend_pid() as pid, txid_current_if_assigned() as xid`)[0],
      )
      await app.ready()
      const first = await app.inject({ method: 'GET', url: '/pid' })
      const pid = first.json().pid
      const held = deferred()
      const release = deferred()
      const locker = db.sql.begin(async (tx) => {
        await tx`lock table t in access exclusive mode`
        held.resolve()
        await release.promise
      })
      await held.promise
      const res = await app.inject({ method: 'POST', url: '/w' })
      expect(res.statusCode, res.body).toBe(503)
      expect(res.json().code).toBe('FST_PG_POOL_QUERY_TIMEOUT')
      expect(res.headers['retry-after']).toBe('1')
      // Still waiting? The lock is still held: nothing of ours may be waiting on it.
      expect(await db.running(applicationName, '%update t%')).toBe(0)
      release.resolve()
      await locker
      const committed = (await db.sql`select count(*)::int as n from uniq`)[0]?.n
      expect(committed).toBe(transaction ? 0 : 1)
      expect(await values()).toEqual([0, 0])
      const next = await app.inject({ method: 'GET', url: '/pid' })
      expect(next.statusCode, next.body).toBe(200)
      // The server's own statement_timeout cancels just the statement: the connection stays.
      expect(next.json()).toEqual({ pid, xid: null })
      expect(app.pgPool.stats()).toMatchObject({ leased: 0, open: 1 })
    })
  }
})

describe('while the route COMMIT is in flight (a deferred trigger makes it take 1.5 s)', () => {
  const setup = async (statementTimeout: number) => {
    current = await coreApp(db.url, { max: 1, statementTimeout, acquireTimeout: 5_000 })
    const { app } = current
    const outcomes: string[] = []
    app.pgPool.on('transaction', (outcome: string) => outcomes.push(outcome))
    app.post('/w', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into slow values (1)`
      return { ok: true }
    })
    app.get(
      '/pid',
      async (request) => (await request.db`select pg_backend_pid() as pid, txid_current_if_assigned() as xid`)[0],
    )
    await app.ready()
    return { app, outcomes, applicationName: current.applicationName }
  }
  const committing = async (applicationName: string) =>
    waitFor(
      async () => (await db.running(applicationName, 'COMMIT%')) + (await db.running(applicationName, 'commit%')) === 1,
      3_000,
      10,
    )

  test('pg_cancel_backend from another session: COMMIT refused, 500 COMMIT_FAILED, nothing committed', async () => {
    const { app, outcomes, applicationName } = await setup(10_000)
    const res = app.inject({ method: 'POST', url: '/w' })
    expect(await committing(applicationName)).toBe(true)
    await db.admin`select pg_cancel_backend(pid) from pg_stat_activity where application_name = ${applicationName} and query ilike 'commit%'`
    const done = await res
    expect((await db.sql`select count(*)::int as n from slow`)[0]?.n).toBe(0)
    expect({ status: done.statusCode, code: done.json().code }).toEqual({
      status: 500,
      code: 'FST_PG_POOL_COMMIT_FAILED',
    })
    expect(outcomes).toEqual(['commit_failed'])
    const next = await app.inject({ method: 'GET', url: '/pid' })
    expect(next.statusCode).toBe(200)
    expect(next.json().xid).toBe(null)
  })

  test('pg_terminate_backend: 503 COMMIT_UNKNOWN (or FAILED), never 2xx, nothing committed, pool recovers', async () => {
    const { app, outcomes, applicationName } = await setup(10_000)
    const res = app.inject({ method: 'POST', url: '/w' })
    expect(await committing(applicationName)).toBe(true)
    await db.terminate(applicationName)
    const done = await res
    expect(done.statusCode, done.body).toBeGreaterThanOrEqual(500)
    expect(done.json().code).toMatch(/^FST_PG_POOL_COMMIT_(UNKNOWN|FAILED)$/)
    expect((await db.sql`select count(*)::int as n from slow`)[0]?.n).toBe(0)
    expect(outcomes.length).toBe(1)
    const next = await app.inject({ method: 'GET', url: '/pid' })
    expect(next.statusCode, next.body).toBe(200)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, open: 1 })
  })

  test('a COMMIT past the client deadline (statement_timeout does not apply to COMMIT on the server): 503 COMMIT_UNKNOWN, pool recovers', async () => {
    // PostgreSQL disables statement_timeout before it commits: only the client deadline
    // (statementTimeout + 1 s) ends the wait.
    const { app, outcomes, applicationName } = await setup(200)
    const done = await app.inject({ method: 'POST', url: '/w' })
    expect({ status: done.statusCode, code: done.json().code, retry: done.headers['retry-after'], outcomes }).toEqual({
      status: 503,
      code: 'FST_PG_POOL_COMMIT_UNKNOWN',
      retry: '1',
      outcomes: ['commit_unknown'],
    })
    const next = await app.inject({ method: 'GET', url: '/pid' })
    expect(next.statusCode, next.body).toBe(200)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0 })
    expect(await waitFor(async () => (await db.countConnections(applicationName)) === 1, 3_000)).toBe(true)
  })

  test('a deferred unique check waits at COMMIT on another session, which then commits: 500 COMMIT_FAILED, not 23505 lost', async () => {
    current = await coreApp(db.url, { max: 1, statementTimeout: 10_000 })
    const { app, applicationName } = current
    app.post('/u', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into uniq values (7)`
      return { ok: true }
    })
    await app.ready()
    const inserted = deferred()
    const release = deferred()
    const other = db.sql.begin(async (tx) => {
      await tx`insert into uniq values (7)`
      inserted.resolve()
      await release.promise
    })
    await inserted.promise
    const res = app.inject({ method: 'POST', url: '/u' })
    expect(
      await waitFor(
        async () =>
          (await db.running(applicationName, '%COMMIT%')) + (await db.running(applicationName, '%commit%')) >= 1,
        3_000,
        10,
      ),
    ).toBe(true)
    release.resolve()
    await other
    const done = await res
    expect({ status: done.statusCode, code: done.json().code }).toEqual({
      status: 500,
      code: 'FST_PG_POOL_COMMIT_FAILED',
    })
    expect((await db.sql`select count(*)::int as n from uniq`)[0]?.n).toBe(1)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0 })
  })
})

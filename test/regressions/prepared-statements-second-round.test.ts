import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing (round nine, second round, against maxPreparedStatements). All three
// failed before the fix: a statement whose Parse the server refused was counted on every request
// (a failing route retired its connection every cap requests; now counted only once the server
// answered its Parse); a shared connection of pipelined routes kept taking new requests, so it
// outlived the cap and maxLifetime (now a connection that is to retire takes no new sharer).

let db: TestDatabase
const apps: FastifyInstance[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(() => db.drop())

interface Probe {
  pid: number
  n: number
}

/** The session's named statements of the app's own (not the pool's start-up ones). */
const PROBE_SQL = `select pg_catalog.pg_backend_pid() as pid, (select count(*)::int from pg_catalog.pg_prepared_statements
  where not from_sql and statement not like 'select pg_catalog.pg_backend_pid() as pid, pg_catalog.current_setting(%'
    and statement not like '%superuser_reserved_connections%') as n`

describe('pool.maxPreparedStatements: defects', () => {
  // Before the fix: preparedAnew (postgres-adapter.ts:260) counts every query with prepare && !prepared,
  // whether or not the server created the statement. A Parse the server refuses (42703 undefined
  // column, 42P01 a table a migration has not created yet, a syntax error) creates nothing, and
  // postgres.js caches nothing either (statements[] is only filled on ParameterDescription), so
  // the SAME failing text is counted again on every request. Observed (cap 5, max 1, 12 failing
  // requests of one text, then a probe): pg_prepared_statements held 0 statements of the app's the
  // whole time, yet the pool closed the connection twice with reason 'statements' (closes
  // ['statements','statements'], 3 distinct backend pids). The comment says "a few too many,
  // never too few"; it is unbounded: one failing route retires a connection every
  // maxPreparedStatements requests, each a new connection (TLS, auth, onConnect) and a
  // misleading `statements` close in the metrics.
  test('a statement whose Parse the server refuses prepares nothing: repeating it never retires the connection', async () => {
    const { app } = await coreApp(db.directUrl, { max: 1, maxPreparedStatements: 5 })
    apps.push(app)
    const closes: string[] = []
    app.pgPool.on('close', (reason) => closes.push(reason))
    app.get('/missing', async (request) => request.db`select no_such_column from pg_catalog.pg_class`)
    app.get('/probe', async (request) => (await request.db.unsafe<Probe[]>(PROBE_SQL))[0])
    const first = (await app.inject('/probe')).json<Probe>()
    const seen: Probe[] = []
    for (let i = 0; i < 12; i++) {
      const res = await app.inject('/missing')
      expect(res.json()).toMatchObject({ code: '42703' })
      seen.push((await app.inject('/probe')).json<Probe>())
    }
    expect(seen.every((p) => p.n === 0)).toBe(true)
    expect({ closes, pids: new Set([first.pid, ...seen.map((p) => p.pid)]).size }).toEqual({ closes: [], pids: 1 })
  })

  // Before the fix: a connection is only checked when it comes back to the pool (Pool#putBack,
  // pool.ts:485). A shared connection of pipelined routes under steady load always has some
  // holder on it: Pool#release (pool.ts:303) hands it to new pipelined requests (#fillShares,
  // SharedConnections.hasRoom/leastBusy look at `usable` and `sharingPaused`, never `prepared`)
  // and never reaches #putBack. Observed (cap 5, max 1, 40 pipelined requests with distinct texts,
  // each overlapping the next): one backend served all 40 and pg_prepared_statements on it
  // reached 40 (8x the cap), no 'statements' close. The growth is unbounded for as long as the
  // overlap lasts (a busy API: for ever), exactly the growth the option was added to stop.
  test('a shared connection of pipelined routes that reached the cap takes no new request and is retired', async () => {
    const { app } = await coreApp(db.directUrl, { max: 1, maxPreparedStatements: 5, acquireTimeout: 20_000 })
    apps.push(app)
    const closes: string[] = []
    app.pgPool.on('close', (reason) => closes.push(reason))
    const reached = new Map<number, () => void>()
    const gates = new Map<number, () => void>()
    const reachedP = new Map<number, Promise<void>>()
    const gateP = new Map<number, Promise<void>>()
    const N = 40
    for (let n = 0; n < N; n++) {
      reachedP.set(n, new Promise((resolve) => reached.set(n, resolve)))
      gateP.set(n, new Promise((resolve) => gates.set(n, resolve)))
    }
    app.get<{ Params: { n: string } }>('/p/:n', { config: { db: { pipeline: true } } }, async (request) => {
      const n = Number(request.params.n)
      await request.db`select 1 as ${request.db(`c${n}`)}`
      const [row] = await request.db.unsafe<Probe[]>(PROBE_SQL)
      reached.get(n)?.()
      await gateP.get(n)
      return row
    })
    const replies: Promise<Probe>[] = []
    const start = (n: number) =>
      replies.push(
        app.inject(`/p/${n}`).then((res) => {
          expect(res.statusCode, res.body).toBe(200)
          return res.json<Probe>()
        }),
      )
    start(0)
    await reachedP.get(0)
    for (let n = 1; n < N; n++) {
      start(n)
      // The next request joins before this one leaves (a correct pool may make it wait instead:
      // then this one leaves after a short while).
      await Promise.race([reachedP.get(n), new Promise((resolve) => setTimeout(resolve, 300))])
      gates.get(n - 1)?.()
    }
    gates.get(N - 1)?.()
    const rows = await Promise.all(replies)
    const most = Math.max(...rows.map((row) => row.n))
    const pids = new Set(rows.map((row) => row.pid)).size
    expect({ most: most <= 5 + 2 ? 'at most the cap (and the requests already on it)' : most, pids }).toEqual({
      most: 'at most the cap (and the requests already on it)',
      pids: expect.any(Number),
    })
    expect(pids).toBeGreaterThanOrEqual(N / 8)
    expect(closes.filter((reason) => reason === 'statements').length).toBeGreaterThanOrEqual(N / 8 - 1)
  })

  // Same cause, older option: maxLifetime is also only checked in Pool#putBack (pool.ts:481), and
  // SharedConnections.hasRoom/leastBusy never look at expiresAt. Observed (maxLifetime 1000, max 1,
  // 30 pipelined requests over 3.1 s, each overlapping the next): one backend served all 30; the
  // only close ('lifetime') came when the last request left, 2 s past the connection's lifetime.
  test('a shared connection of pipelined routes past maxLifetime takes no new request and is retired', async () => {
    const { app } = await coreApp(db.directUrl, { max: 1, maxLifetime: 1000, acquireTimeout: 20_000 })
    apps.push(app)
    // Each request's gate exists before it starts: one opened while its request still waits for
    // a connection (the retiring one takes no new request) is not lost.
    const gates = new Map<number, () => void>()
    const gateP = new Map<number, Promise<void>>()
    for (let n = 0; n < 30; n++) gateP.set(n, new Promise((resolve) => gates.set(n, resolve)))
    const reached = new Map<number, Promise<void>>()
    const arrive = new Map<number, () => void>()
    app.get<{ Params: { n: string } }>('/p/:n', { config: { db: { pipeline: true } } }, async (request) => {
      const n = Number(request.params.n)
      const [row] = await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`
      arrive.get(n)?.()
      await gateP.get(n)
      return row
    })
    const replies: Promise<{ pid: number; at: number }>[] = []
    const started = Date.now()
    for (let n = 0; n < 30; n++) {
      reached.set(n, new Promise((resolve) => arrive.set(n, resolve)))
      replies.push(app.inject(`/p/${n}`).then((res) => ({ ...res.json<{ pid: number }>(), at: Date.now() - started })))
      await Promise.race([reached.get(n), new Promise((resolve) => setTimeout(resolve, 300))])
      await new Promise((resolve) => setTimeout(resolve, 100))
      gates.get(n - 1)?.()
    }
    gates.get(29)?.()
    const rows = await Promise.all(replies)
    const elapsed = Date.now() - started
    expect(elapsed).toBeGreaterThan(2500)
    // Over 2.5 s or more with a lifetime of at most 1 s: at least two backends served.
    expect(new Set(rows.map((row) => row.pid)).size).toBeGreaterThanOrEqual(2)
  })
})

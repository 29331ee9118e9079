import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { deferred, failOnProcessErrors } from '../faults/process-errors.js'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'

// Held attacks from hostile probing (round 8, the server acting at bad moments).
// Server-side settings applied to the test's own database (ALTER DATABASE ... SET), then the
// pool's connections opened after them. What does the client get, what is committed, does the
// pool recover?

let db: TestDatabase
let current: TestApp | undefined
let dbName: string
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  dbName = new URL(db.directUrl).pathname.slice(1)
  await db.sql`create table t (id int primary key, v int)`
})
beforeEach(async () => {
  await db.sql`truncate t`
  await db.sql`insert into t values (1, 0), (2, 0)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
  await db.admin.unsafe(`alter database ${dbName} reset all`)
})
afterAll(() => db.drop())

const pidOf = async (request: { db: TestApp['app']['db'] }) =>
  (
    (
      await (request.db as unknown as (
        s: TemplateStringsArray,
      ) => Promise<{ pid: number }[]>)`select pg_backend_pid() as pid`
    )[0] as { pid: number }
  ).pid

describe('ALTER DATABASE SET ...', () => {
  test('idle_in_transaction_session_timeout kills a route transaction mid-handler: 5xx, nothing committed, pool recovers', async () => {
    await db.admin.unsafe(`alter database ${dbName} set idle_in_transaction_session_timeout = '300ms'`)
    current = await coreApp(db.url, { max: 1, acquireTimeout: 2_000, statementTimeout: 3_000 })
    const { app, applicationName } = current
    app.post('/slow-tx', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`update t set v = v + 1 where id = 1`
      await sleep(1_000)
      return { ok: true }
    })
    app.post('/slow-tx-second', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`update t set v = v + 1 where id = 1`
      await sleep(1_000)
      await request.db`update t set v = v + 1 where id = 2`
      return { ok: true }
    })
    app.get('/v', async (request) => (await request.db`select id, v from t order by id`).map((r) => r.v))
    await app.ready()
    for (const url of ['/slow-tx', '/slow-tx-second']) {
      const res = await app.inject({ method: 'POST', url })
      expect(res.statusCode, `${url}: ${res.body}`).toBeGreaterThanOrEqual(500)
      const body = res.json()
      expect(body.code).toMatch(/^FST_PG_POOL_/)
      const next = await app.inject({ method: 'GET', url: '/v' })
      expect(next.statusCode, next.body).toBe(200)
      expect(next.json()).toEqual([0, 0])
    }
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
    expect(await waitFor(async () => (await db.countConnections(applicationName)) <= 1)).toBe(true)
  })

  test('idle_session_timeout closes idle pool connections: later requests are all served', async () => {
    await db.admin.unsafe(`alter database ${dbName} set idle_session_timeout = '200ms'`)
    current = await coreApp(db.url, { max: 3, idleTimeout: 0, acquireTimeout: 2_000, statementTimeout: 3_000 })
    const { app, applicationName } = current
    app.get('/pid', async (request) => ({ pid: await pidOf(request as never) }))
    const base = await listen(app)
    for (let round = 0; round < 4; round++) {
      const responses = await Promise.all(Array.from({ length: 6 }, () => fetch(`${base}/pid`)))
      const bodies = await Promise.all(responses.map((r) => r.text()))
      expect(
        responses.map((r) => r.status),
        bodies.join('\n'),
      ).toEqual(Array(6).fill(200))
      // Every connection the pool holds is killed by the server while idle.
      expect(await waitFor(async () => (await db.countConnections(applicationName)) === 0, 3_000)).toBe(true)
      await sleep(100)
    }
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
  })

  test('statement_timeout on the database does not override pool.statementTimeout, before or after a reset', async () => {
    await db.admin.unsafe(`alter database ${dbName} set statement_timeout = '100ms'`)
    current = await coreApp(db.url, { max: 1, statementTimeout: 5_000 })
    const { app } = current
    app.get('/sleep', async (request) => {
      await request.db`select pg_sleep(0.3)`
      return (await request.db`select current_setting('statement_timeout') as s`)[0]
    })
    await app.ready()
    for (let i = 0; i < 3; i++) {
      const res = await app.inject({ method: 'GET', url: '/sleep' })
      expect(res.statusCode, res.body).toBe(200)
      expect(res.json()).toEqual({ s: '5s' })
    }
  })

  test('default_transaction_isolation = serializable: the reset still runs, plain requests still work', async () => {
    await db.admin.unsafe(`alter database ${dbName} set default_transaction_isolation = 'serializable'`)
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    app.post('/w', { config: { db: { transaction: true } } }, async (request) => {
      const [row] = await request.db`select current_setting('transaction_isolation') as iso`
      await request.db`update t set v = v + 1 where id = 1`
      return row
    })
    app.get('/iso', async (request) => (await request.db`select current_setting('transaction_isolation') as iso`)[0])
    await app.ready()
    for (let i = 0; i < 3; i++) {
      const w = await app.inject({ method: 'POST', url: '/w' })
      expect(w.statusCode, w.body).toBe(200)
      expect(w.json()).toEqual({ iso: 'serializable' })
      const r = await app.inject({ method: 'GET', url: '/iso' })
      expect(r.statusCode, r.body).toBe(200)
      expect(r.json()).toEqual({ iso: 'serializable' })
    }
    expect((await db.sql`select v from t where id = 1`)[0]?.v).toBe(3)
  })

  test('default_transaction_read_only = on: writes refused with a coded error, nothing committed; turning it off is seen by new connections', async () => {
    await db.admin.unsafe(`alter database ${dbName} set default_transaction_read_only = on`)
    current = await coreApp(db.url, { max: 2, idleTimeout: 0 })
    const { app, applicationName } = current
    app.post('/w', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`update t set v = v + 1 where id = 1`
      return { ok: true }
    })
    app.post('/plain', async (request) => {
      await request.db`update t set v = v + 1 where id = 1`
      return { ok: true }
    })
    await app.ready()
    const a = await app.inject({ method: 'POST', url: '/w' })
    const b = await app.inject({ method: 'POST', url: '/plain' })
    for (const res of [a, b]) {
      expect(res.statusCode, res.body).toBe(500)
      expect(res.json()).toMatchObject({ code: '25006' })
    }
    expect((await db.sql`select v from t where id = 1`)[0]?.v).toBe(0)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0 })
    await db.admin.unsafe(`alter database ${dbName} reset default_transaction_read_only`)
    await db.terminate(applicationName)
    await waitFor(async () => (await db.countConnections(applicationName)) === 0)
    await sleep(100)
    let ok = 0
    for (let i = 0; i < 4; i++) {
      const res = await app.inject({ method: 'POST', url: '/plain' })
      if (res.statusCode === 200) ok++
    }
    expect(ok).toBeGreaterThanOrEqual(3)
  })

  test('lock_timeout on the database: a request blocked on a lock gets a coded error, the connection is reused clean', async () => {
    await db.admin.unsafe(`alter database ${dbName} set lock_timeout = '200ms'`)
    current = await coreApp(db.url, { max: 1, statementTimeout: 5_000 })
    const { app } = current
    app.post('/w', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`update t set v = v + 1 where id = 2`
      await request.db`update t set v = v + 1 where id = 1`
      return { ok: true }
    })
    app.get(
      '/state',
      async (request) => (await request.db`select pg_backend_pid() as pid, txid_current_if_assigned() as xid`)[0],
    )
    await app.ready()
    const held = deferred()
    const released = deferred()
    const locker = db.sql.begin(async (tx) => {
      await tx`select * from t where id = 1 for update`
      held.resolve()
      await released.promise
    })
    await held.promise
    const res = await app.inject({ method: 'POST', url: '/w' })
    released.resolve()
    await locker
    expect(res.statusCode, res.body).toBeGreaterThanOrEqual(500)
    expect(res.json().code).toBe('55P03')
    expect(res.body).not.toContain('lock timeout')
    expect((await db.sql`select id, v from t order by id`).map((r) => r.v)).toEqual([0, 0])
    const next = await app.inject({ method: 'GET', url: '/state' })
    expect(next.statusCode, next.body).toBe(200)
    expect(next.json().xid).toBe(null)
    expect(await db.countConnections(current.applicationName, 'idle in transaction')).toBe(0)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0 })
  })
})

import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table pipeline_items (id int primary key, name text not null)`
  await db.sql`insert into pipeline_items select g, 'item ' || g from generate_series(1, 100) g`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const pipelined = { config: { db: { pipeline: true } } }

describe('pipelined routes (config.db.pipeline)', () => {
  test('requests share connections up to pipelineDepth, with every answer right and no more than max connections', async () => {
    current = await coreApp(db.url, { max: 2, pipelineDepth: 8, maxWaiting: 100 })
    const { app, applicationName } = current
    let mostPipelined = 0
    app.pgPool.on('acquire', () => {
      mostPipelined = Math.max(mostPipelined, app.pgPool.stats().pipelined)
    })
    app.get<{ Params: { id: string } }>('/items/:id', pipelined, async (request) => {
      const [row] =
        await request.db`select id, name, pg_backend_pid() as pid from pipeline_items where id = ${Number(request.params.id)}`
      return row
    })
    const responses = await Promise.all(Array.from({ length: 40 }, (_, i) => app.inject(`/items/${i + 1}`)))
    expect(responses.map((r) => r.statusCode)).toEqual(Array(40).fill(200))
    expect(responses.map((r) => r.json())).toMatchObject(
      Array.from({ length: 40 }, (_, i) => ({ id: i + 1, name: `item ${i + 1}` })),
    )
    expect(new Set(responses.map((r) => r.json().pid)).size).toBeLessThanOrEqual(2)
    // Two connections, each shared by up to 8 requests at once.
    expect(mostPipelined).toBeGreaterThan(2)
    expect(mostPipelined).toBeLessThanOrEqual(16)
    expect(await db.countConnections(applicationName)).toBeLessThanOrEqual(2)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, shared: 0, pipelined: 0, waiting: 0 })
  })

  test('past pipelineDepth on every connection, requests wait in the queue (counted, bounded by acquireTimeout)', async () => {
    current = await coreApp(db.url, { max: 1, pipelineDepth: 2, acquireTimeout: 300 })
    const { app } = current
    app.get('/sleep', pipelined, async (request) => request.db`select pg_sleep(0.2)`)
    const requests = Array.from({ length: 5 }, () => app.inject('/sleep'))
    expect(await waitFor(() => app.pgPool.stats().waiting === 3)).toBe(true)
    expect(app.pgPool.stats()).toMatchObject({ leased: 1, shared: 1, pipelined: 2 })
    const statuses = (await Promise.all(requests)).map((r) => r.statusCode).sort()
    // Two run at once (0.2 s each, one after the other on the one connection: 0.4 s); the
    // next two wait for a share and get one within 300 ms; the last one times out.
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(3)
    expect(statuses.every((s) => s === 200 || s === 503)).toBe(true)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, pipelined: 0, waiting: 0 })
  })

  test('a request that needs a connection of its own is not starved by pipelined traffic', async () => {
    current = await coreApp(db.url, { max: 2, pipelineDepth: 4, acquireTimeout: 5_000 })
    const { app } = current
    app.get('/read', pipelined, async (request) => request.db`select pg_sleep(0.01)`)
    app.post('/write', { config: { db: { transaction: true } } }, async (request) => {
      const [row] = await request.db`insert into pipeline_items values (1000, 'written') returning id`
      return row
    })
    let stop = false
    const readers = Array.from({ length: 12 }, async () => {
      let served = 0
      while (!stop) {
        expect((await app.inject('/read')).statusCode).toBe(200)
        served++
      }
      return served
    })
    expect(await waitFor(() => app.pgPool.stats().shared === 2)).toBe(true)
    const started = Date.now()
    const write = await app.inject({ method: 'POST', url: '/write' })
    const waited = Date.now() - started
    stop = true
    const served = await Promise.all(readers)
    expect(write.statusCode).toBe(200)
    // Pipelined requests queue behind it: it waits for one shared connection to drain (a few
    // 10 ms statements), not for the readers to stop.
    expect(waited).toBeLessThan(1_000)
    expect(served.every((n) => n > 0)).toBe(true)
    expect((await db.sql`select name from pipeline_items where id = 1000`)[0]?.name).toBe('written')
  })

  test('session state a pipelined request changed is reset before a request that holds the connection alone', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    app.get('/set', pipelined, async (request) => {
      await request.db`select set_config('app.leak', 'pipelined', false)`
      return { ok: true }
    })
    app.get('/read', async (request) => {
      const [row] = await request.db`select current_setting('app.leak', true) as leak, pg_backend_pid() as pid`
      return row
    })
    expect((await app.inject('/set')).statusCode).toBe(200)
    const read = await app.inject('/read')
    expect(read.statusCode).toBe(200)
    expect([null, '']).toContain(read.json().leak)
    expect(app.pgPool.stats()).toMatchObject({ open: 1, leased: 0 })
  })

  test('begin() on a pipelined route is refused with a coded 500; nothing stays leased', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    app.get('/tx', pipelined, async (request) => request.db.begin(async (tx) => tx`select 1`))
    const res = await app.inject('/tx')
    expect(res.statusCode).toBe(500)
    expect(res.json()).toMatchObject({
      code: 'FST_PG_POOL_PIPELINED',
      message:
        'Route /tx is pipelined (config.db.pipeline) and shares its connection: a transaction needs a connection of its own',
    })
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, pipelined: 0 })
  })

  test('a client that hangs up lets its running statement finish (no cancel on a shared connection) and frees its share', async () => {
    current = await coreApp(db.url, { max: 1, pipelineDepth: 4 })
    const { app, applicationName } = current
    app.get('/sleep', pipelined, async (request) => request.db`select pg_sleep(0.4)`)
    app.get('/quick', pipelined, async (request) => request.db`select 1 as one`)
    const base = await listen(app)
    const gone = startRequest(`${base}/sleep`)
    expect(await waitFor(async () => (await db.running(applicationName, '%pg_sleep(0.4)%')) === 1)).toBe(true)
    const neighbour = fetch(`${base}/quick`).then((r) => r.status)
    await sleep(50)
    gone.abort()
    expect(await gone.done).toBe('aborted')
    // The statement is not cancelled: it still runs, and the neighbour queued behind it on the
    // same connection gets its answer afterwards.
    await sleep(100)
    expect(await db.running(applicationName, '%pg_sleep(0.4)%')).toBe(1)
    expect(await neighbour).toBe(200)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect((await fetch(`${base}/quick`)).status).toBe(200)
  })

  test('a backend killed under shared requests fails each of them with a coded 503, and the pool recovers', async () => {
    current = await coreApp(db.url, { max: 1, pipelineDepth: 4 })
    const { app, applicationName } = current
    app.get('/sleep', pipelined, async (request) => request.db`select pg_sleep(2)`)
    app.get('/quick', pipelined, async (request) => request.db`select 1 as one`)
    const requests = [app.inject('/sleep'), app.inject('/sleep'), app.inject('/quick')]
    expect(await waitFor(() => app.pgPool.stats().pipelined === 3)).toBe(true)
    expect(await waitFor(async () => (await db.running(applicationName, '%pg_sleep(2)%')) === 1)).toBe(true)
    expect(await db.terminate(applicationName)).toBe(1)
    const responses = await Promise.all(requests)
    for (const res of responses) {
      expect(res.statusCode).toBe(503)
      expect(res.json().code).toBe('FST_PG_POOL_CONNECTION_LOST')
    }
    expect((await app.inject('/quick')).statusCode).toBe(200)
    expect(app.pgPool.stats()).toMatchObject({ open: 1, leased: 0, pipelined: 0 })
  })

  test('a pipelined request held past leakDetectionThreshold is warned about with its route', async () => {
    current = await coreApp(db.url, { max: 1, leakDetectionThreshold: 100 })
    const { app, logs } = current
    app.get('/slow', pipelined, async (request) => request.db`select pg_sleep(0.4)`)
    expect((await app.inject('/slow')).statusCode).toBe(200)
    const warning = logs.find((l) => l.msg === 'database connection held longer than leakDetectionThreshold')
    expect(warning).toMatchObject({ route: '/slow', method: 'GET', threshold: 100 })
  })

  test('bad route options fail at registration with a coded error', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    expect(() => app.get('/a', { config: { db: { pipeline: 'yes' as never } } }, async () => 1)).toThrow(
      'Invalid option config.db.pipeline of /a: expected a boolean',
    )
    expect(() =>
      app.get('/b', { config: { db: { pipeline: true, transaction: true } as never } }, async () => 1),
    ).toThrow('Invalid option config.db of /b: a pipelined route shares its connection and cannot be a transaction')
    expect(() => app.get('/c', { config: { db: { pipelined: true } as never } }, async () => 1)).toThrow(
      'Invalid option config.db.pipelined of /c: unknown option',
    )
    await current.app.close()
    current = await coreApp(db.url, { max: 1 }, {}, { onLease: async () => {} })
    expect(() => current?.app.get('/d', pipelined, async () => 1)).toThrow(
      'Invalid option config.db.pipeline of /d: onLease prepares a connection of its own; a pipelined route shares one',
    )
  })

  test('pool.pipelineDepth is validated', async () => {
    await expect(coreApp(db.url, { pipelineDepth: 0 })).rejects.toThrow(
      'Invalid option pool.pipelineDepth: expected an integer >= 1, got 0',
    )
  })
})

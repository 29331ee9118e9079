import { request as httpRequest } from 'node:http'
import { connect as tcpConnect } from 'node:net'
import { Readable } from 'node:stream'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (body text not null)`
})
beforeEach(async () => {
  await db.sql`truncate note`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

async function serverClean(applicationName: string): Promise<boolean> {
  return waitFor(async () => {
    const [row] = await db.admin<{ busy: number; locks: number }[]>`
      select
        (select count(*)::int from pg_stat_activity where application_name = ${applicationName}
           and state <> 'idle') as busy,
        (select count(*)::int from pg_locks l join pg_stat_activity a using (pid)
           where a.application_name = ${applicationName} and l.locktype <> 'virtualxid') as locks`
    return row?.busy === 0 && row?.locks === 0
  }, 5_000)
}

describe('more hang-ups', () => {
  test('readOnly route on the primary, hang-up mid-statement: the next write on the connection is not read-only', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 5_000, statementTimeout: 20_000 })
    const { app, applicationName } = current
    app.get(
      '/ro',
      { config: { db: { readOnly: true } } },
      async (request) => request.db`select pg_sleep(10) as ro_sleep`,
    )
    app.get('/write', async (request) => {
      await request.db`insert into note values ('w')`
      return { ok: true }
    })
    const base = await listen(app)
    const client = startRequest(`${base}/ro`)
    await waitUntil(async () => (await db.running(applicationName, '%ro_sleep%')) === 1, 'the read to run', 10_000)
    client.abort()
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
    expect(await serverClean(applicationName)).toBe(true)
    const write = await app.inject('/write')
    expect({ status: write.statusCode, body: write.json() }).toEqual({ status: 200, body: { ok: true } })
  })

  test('HEAD of a route streaming a cursor: answered, lease back, the cursor does not run on', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 2_000, statementTimeout: 20_000 })
    const { app, applicationName } = current
    app.get('/stream', async (request, reply) => {
      const cursor =
        request.db`select i, repeat('x', 1000) as pad, pg_sleep(0.0001) from generate_series(1, 300000) i`.cursor(100)
      async function* lines() {
        for await (const batch of cursor) for (const row of batch) yield `${row.i} ${row.pad}\n`
      }
      reply.type('text/plain')
      return Readable.from(lines())
    })
    app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    const head = await fetch(`${base}/stream`, { method: 'HEAD', signal: AbortSignal.timeout(10_000) })
    expect(head.status).toBe(200)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
    expect(await serverClean(applicationName)).toBe(true)
    expect((await app.inject('/next')).json()).toEqual({ one: 1 })
  })

  test('HEAD of a route returning COPY TO STDOUT: answered, lease back, the COPY does not run on', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 2_000, statementTimeout: 20_000 })
    const { app, applicationName } = current
    app.get('/copy', async (request, reply) => {
      reply.type('text/plain')
      return request.db
        .unsafe("copy (select i, repeat('x', 500) from generate_series(1, 3000000) i) to stdout")
        .readable()
    })
    app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    const head = await fetch(`${base}/copy`, { method: 'HEAD', signal: AbortSignal.timeout(10_000) })
    expect(head.status).toBe(200)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
    expect(await serverClean(applicationName)).toBe(true)
    expect((await app.inject('/next')).json()).toEqual({ one: 1 })
  })

  test('a streamed cursor whose statement fails mid-stream (GET): lease back, next served', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 2_000, statementTimeout: 20_000 })
    const { app, applicationName } = current
    app.get('/fail', async (request, reply) => {
      const cursor =
        request.db`select i, 1 / (50000 - i) as boom, repeat('x', 200) as pad from generate_series(1, 100000) i`.cursor(
          100,
        )
      async function* lines() {
        for await (const batch of cursor) for (const row of batch) yield `${row.i} ${row.pad}\n`
      }
      reply.type('text/plain')
      return Readable.from(lines())
    })
    app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    const outcome = await new Promise<string>((resolve) => {
      const req = httpRequest(`${base}/fail`, { agent: false })
      req.on('response', (res) => {
        res.resume()
        res.on('end', () => resolve('complete'))
        res.on('error', () => resolve('cut'))
        res.on('aborted', () => resolve('cut'))
      })
      req.on('error', () => resolve('cut'))
      req.end()
    })
    // A response cut mid-body is the only honest end for a failed stream.
    expect(outcome).toBe('cut')
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
    expect(await serverClean(applicationName)).toBe(true)
    expect((await app.inject('/next')).json()).toEqual({ one: 1 })
  })

  test('pipelined route: a hang-up lets the statement end, the share comes back, the others are served', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 5_000, statementTimeout: 20_000 })
    const { app, applicationName } = current
    app.get(
      '/p',
      { config: { db: { pipeline: true } } },
      async (request) => request.db`select pg_sleep(0.5) as pipe_sleep`,
    )
    app.get('/q', { config: { db: { pipeline: true } } }, async (request) => (await request.db`select 2 as two`)[0])
    const base = await listen(app)
    const client = startRequest(`${base}/p`)
    await waitUntil(
      async () => (await db.running(applicationName, '%pipe_sleep%')) === 1,
      'the statement to run',
      10_000,
    )
    const others = Array.from({ length: 5 }, () => fetch(`${base}/q`).then(async (r) => [r.status, await r.json()]))
    client.abort()
    expect(await Promise.all(others)).toEqual(Array(5).fill([200, { two: 2 }]))
    expect(await waitFor(() => app.pgPool.stats().leased === 0 && app.pgPool.stats().pipelined === 0, 3_000)).toBe(true)
    expect(await serverClean(applicationName)).toBe(true)
  })

  test('100 transaction GETs hanging up at random points (queue, statement, COMMIT): no row of an aborted request, pool clean', async () => {
    current = await coreApp(db.url, { max: 3, maxWaiting: 200, acquireTimeout: 20_000, statementTimeout: 20_000 })
    const { app, applicationName } = current
    const answered: string[] = []
    app.get('/tx/:n', { config: { db: { transaction: true } } }, async (request) => {
      const { n } = request.params as { n: string }
      await request.db`insert into note values (${n})`
      await request.db`select pg_sleep(random() * 0.02)`
      return { n }
    })
    const base = await listen(app)
    const clients = Array.from({ length: 100 }, (_, i) => {
      const n = String(i)
      const client = startRequest(`${base}/tx/${n}`)
      const abort = i % 2 === 0
      if (abort) setTimeout(() => client.abort(), Math.floor(Math.random() * 60))
      return client.done.then((status) => {
        if (status === 200) answered.push(n)
      })
    })
    await Promise.all(clients)
    expect(await waitFor(() => app.pgPool.stats().leased === 0 && app.pgPool.stats().waiting === 0, 10_000)).toBe(true)
    expect(await serverClean(applicationName)).toBe(true)
    const rows = (await db.sql<{ body: string }[]>`select body from note`).map((r) => r.body)
    // Every 200 committed; every row belongs to a request that did not hang up, or to one
    // whose COMMIT ran before the hang-up arrived (answered or not): a row of an odd index must be answered.
    for (const n of answered) expect(rows).toContain(n)
    for (const n of rows) if (Number(n) % 2 === 1) expect(answered).toContain(n)
  })

  test('control: a transaction GET (no body) whose client hangs up mid-statement: rolled back, ABORTED', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 10_000, statementTimeout: 20_000 })
    const { app, applicationName } = current
    let settled: unknown
    app.get('/tx', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values ('get')`
      try {
        await request.db`select pg_sleep(3) as get_sleep`
        settled = 'finished'
      } catch (error) {
        settled = (error as { code?: string }).code
      }
      return { ok: true }
    })
    const base = await listen(app)
    const client = startRequest(`${base}/tx`)
    await waitUntil(
      async () => (await db.running(applicationName, '%get_sleep%')) === 1,
      'the statement to run',
      10_000,
    )
    client.abort()
    expect(await waitFor(() => app.pgPool.stats().leased === 0 && settled !== undefined, 10_000)).toBe(true)
    expect(await serverClean(applicationName)).toBe(true)
    const rows = (await db.sql<{ body: string }[]>`select body from note`).map((r) => r.body)
    expect({ settled, rows }).toEqual({ settled: 'FST_PG_POOL_ABORTED', rows: [] })
  })

  test('transaction route returning a large stream to a paused reader: committed before the first byte, lease back at once', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 2_000 })
    const { app, applicationName } = current
    app.get('/tx-stream', { config: { db: { transaction: true } } }, async (request, reply) => {
      await request.db`insert into note values ('streamed')`
      reply.type('text/plain')
      return Readable.from(
        (function* () {
          for (let i = 0; i < 20_000; i++) yield `${'y'.repeat(1000)}\n`
        })(),
      )
    })
    app.get('/next', async (request) => (await request.db`select count(*)::int as n from note`)[0])
    const base = await listen(app)
    const { port } = new URL(base)
    const socket = tcpConnect(Number(port), '127.0.0.1')
    socket.on('error', () => {})
    socket.write('GET /tx-stream HTTP/1.1\r\nHost: x\r\n\r\n')
    socket.pause()
    // The reader reads nothing; the route's work is committed and its connection free regardless.
    expect(await waitFor(async () => (await db.sql`select 1 from note`).length === 1, 5_000)).toBe(true)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
    expect(await serverClean(applicationName)).toBe(true)
    expect((await app.inject('/next')).json()).toEqual({ n: 1 })
    socket.destroy()
  })
})

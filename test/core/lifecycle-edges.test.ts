import { request as httpRequest } from 'node:http'
import { Readable } from 'node:stream'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'

// From hostile probing: attacks on the request lifecycle that held (not covered by test/core,
// test/session or test/regressions). Each asserts the promised behaviour.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (body text not null)`
  await db.sql`create or replace function slow_trg() returns trigger language plpgsql as $$
    begin perform pg_sleep(0.6); return null; end $$`
  await db.sql`create table slow_commit (body text)`
  await db.sql`create constraint trigger slow after insert on slow_commit
    deferrable initially deferred for each row execute function slow_trg()`
})
beforeEach(async () => {
  await db.sql`truncate note, slow_commit`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const notes = async () => (await db.sql<{ body: string }[]>`select body from note order by body`).map((r) => r.body)
const tx = { config: { db: { transaction: true } } } as const

describe('holds', () => {
  test('a cursor streamed as the payload, the client hangs up mid-stream: lease back, nothing runs', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 1000 })
    const { app, applicationName } = current
    app.get('/stream', async (request, reply) => {
      const cursor = request.db`select i, repeat('x', 1000) as pad from generate_series(1, 200000) i`.cursor(100)
      async function* lines() {
        for await (const batch of cursor) for (const row of batch) yield `${row.i}\n`
      }
      reply.type('text/plain')
      return Readable.from(lines())
    })
    app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    await new Promise<void>((resolve) => {
      const req = httpRequest(`${base}/stream`, { agent: false })
      req.on('response', (res) => {
        let n = 0
        res.on('data', (chunk: Buffer) => {
          n += chunk.length
          if (n > 20_000) {
            req.destroy()
            resolve()
          }
        })
      })
      req.on('error', () => {})
      req.end()
    })
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease back after the hang-up')
    expect(await db.countConnections(applicationName, 'active')).toBe(0)
    expect((await app.inject('/next')).json()).toEqual({ one: 1 })
  })

  test('connectionTimeout fires mid-transaction: rolled back, statement cancelled, lease back', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 1000 }, { connectionTimeout: 300 })
    const { app, applicationName } = current
    app.get('/slow', tx, async (request) => {
      await request.db`insert into note values ('slow')`
      await request.db`select pg_sleep(5)`
      return 'done'
    })
    app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    const outcome = await fetch(`${base}/slow`).then(
      (r) => r.status,
      () => 'socket closed',
    )
    expect(outcome).toBe('socket closed')
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease back')
    expect(await db.running(applicationName, '%pg_sleep%')).toBe(0)
    expect(await notes()).toEqual([])
    expect((await app.inject('/next')).statusCode).toBe(200)
  })

  test('an onRequest hook that replies 401 before any query takes no connection; one that queried rolls back', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 1000 })
    const { app } = current
    app.addHook('onRequest', async (request, reply) => {
      if (request.headers['x-query']) await request.db`insert into note values ('on-request')`
      if (request.headers['x-deny']) return reply.code(401).send({ denied: true })
    })
    app.post('/x', tx, async (request) => {
      await request.db`insert into note values ('handler')`
      return 'ok'
    })
    let acquires = 0
    app.pgPool.on('acquire', () => acquires++)
    expect((await app.inject({ method: 'POST', url: '/x', headers: { 'x-deny': '1' } })).statusCode).toBe(401)
    expect(acquires).toBe(0)
    const denied = await app.inject({ method: 'POST', url: '/x', headers: { 'x-deny': '1', 'x-query': '1' } })
    expect(denied.statusCode).toBe(401)
    expect(await notes()).toEqual([])
    expect((await app.inject({ method: 'POST', url: '/x', headers: { 'x-query': '1' } })).statusCode).toBe(200)
    expect(await notes()).toEqual(['handler', 'on-request'])
    expect(app.pgPool.stats().leased).toBe(0)
  })

  test('the 404 handler and the error handler can use request.db; the lease comes back', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 1000 })
    const { app } = current
    app.setNotFoundHandler(async (request, reply) => {
      const [row] = await request.db`select 'not found' as v`
      return reply.code(404).send(row)
    })
    app.setErrorHandler(async (error, request, reply) => {
      const [row] = await request.db`select 'error handler' as v`
      return reply.code(500).send({ ...row, message: (error as Error).message })
    })
    app.post('/boom', tx, async (request) => {
      await request.db`insert into note values ('boom')`
      throw new Error('x')
    })
    const notFound = await app.inject('/nothing-here')
    expect(notFound.json()).toEqual({ v: 'not found' })
    const boom = await app.inject({ method: 'POST', url: '/boom' })
    expect(boom.json()).toEqual({ v: 'error handler', message: 'x' })
    expect(await notes()).toEqual([])
    expect(app.pgPool.stats().leased).toBe(0)
  })

  test('a response that fails its schema after writes in a route transaction: 500, rolled back', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 1000 })
    const { app } = current
    const schema = {
      response: { 200: { type: 'object', required: ['id'], properties: { id: { type: 'integer' } } } },
    }
    app.post('/schema', { ...tx, schema }, async (request) => {
      await request.db`insert into note values ('schema')`
      return { nope: true }
    })
    const response = await app.inject({ method: 'POST', url: '/schema' })
    expect(response.statusCode).toBe(500)
    expect(await notes()).toEqual([])
    expect(app.pgPool.stats().leased).toBe(0)
  })

  test('handlerTimeout firing during a slow COMMIT: never a 2xx without the row', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 1000 })
    const { app } = current
    app.post('/slow-commit', { ...tx, handlerTimeout: 300 }, async (request) => {
      await request.db`insert into slow_commit values ('x')`
      return { ok: true }
    })
    const response = await app.inject({ method: 'POST', url: '/slow-commit' })
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease back')
    const n = (await db.sql<{ n: number }[]>`select count(*)::int as n from slow_commit`)[0]?.n
    if (response.statusCode < 400) expect(n).toBe(1)
    else expect(response.statusCode).toBe(503)
  })

  test('control: reply.send() then return on a route without a transaction only warns', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 1000 })
    const { app, logs } = current
    app.post('/twice', async (request, reply) => {
      await request.db`insert into note values ('twice')`
      reply.send({ first: true })
      return { second: true }
    })
    const response = await app.inject({ method: 'POST', url: '/twice' })
    expect(response.json()).toEqual({ first: true })
    expect(logs.some((line) => (line.err as { code?: string } | undefined)?.code === 'FST_ERR_REP_ALREADY_SENT')).toBe(
      true,
    )
    expect(app.pgPool.stats().leased).toBe(0)
  })

  test('request.dbs.<name> / request.db fetched in the handler and first used after the reply: RELEASED', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 1000 })
    const { app } = current
    let late: Promise<string | undefined> | undefined
    app.get('/later', async (request) => {
      const captured = request.db // lease object built, nothing leased yet
      late = new Promise((resolve) => setImmediate(resolve)).then(() =>
        captured`select 1`.then(
          () => undefined,
          (error: { code?: string }) => error.code,
        ),
      )
      return 'sent'
    })
    expect((await app.inject('/later')).statusCode).toBe(200)
    expect(await late).toBe('FST_PG_POOL_RELEASED')
    expect(app.pgPool.stats().leased).toBe(0)
  })
})

import { Readable, Writable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, beforeEach, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../otel/sdk.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'

// From hostile probing (third round, held): the umbrella with health, metrics, backpressure and otel all on,
// against today's request-lifecycle changes (reply gate, onError, second-send drop).

let db: TestDatabase
let sdk: TestSdk
let app: FastifyInstance | undefined
let logs: Record<string, unknown>[] = []
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (body text not null)`
  await db.sql`create table parent (id int primary key)`
  await db.sql`create table child (id int primary key,
    parent_id int references parent (id) deferrable initially deferred)`
  await db.sql`create table slow (id int)`
  await db.sql.unsafe(`create function slow_commit() returns trigger language plpgsql as $$
    begin perform pg_sleep(1); return null; end $$`)
  await db.sql.unsafe(`create constraint trigger slow_c after insert on slow deferrable initially deferred
    for each row execute function slow_commit()`)
  sdk = startTestSdk({ global: true })
})
beforeEach(async () => {
  await db.sql`truncate note, child, parent, slow`
  logs = []
})
afterEach(async () => {
  await app?.close()
  app = undefined
  sdk.reset()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

async function umbrella(extra: Record<string, unknown> = {}, server: Record<string, unknown> = {}) {
  const stream = new Writable({
    write(chunk, _e, cb) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line))
      cb()
    },
  })
  const a = Fastify({ logger: { level: 'debug', stream }, ...server })
  await a.register(pgPool, {
    connection: db.url,
    pool: { max: 2, pgbouncer: db.viaBouncer, applicationName: uniqueName(), acquireTimeout: 2000 },
    otel: {},
    ...extra,
  } as never)
  app = a
  return a
}
const notes = async () => (await db.sql<{ body: string }[]>`select body from note`).map((r) => r.body)

test('stream that errors mid-way on a non-transaction route: lease returned', async () => {
  const a = await umbrella()
  a.get('/s', async (request) => {
    await request.db`select 1`
    let n = 0
    return new Readable({
      read() {
        n++
        if (n === 1) this.push('chunk')
        else this.destroy(new Error('boom'))
      },
    })
  })
  const base = await listen(a)
  await fetch(`${base}/s`)
    .then((r) => r.text())
    .catch(() => 'err')
  expect(await waitFor(() => a.pgPool.stats().leased === 0, 5000)).toBe(true)
})

test('callNotFound in a transaction route: 404, rolled back, lease back', async () => {
  const a = await umbrella()
  a.post('/t', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into note values ('nf')`
    reply.callNotFound()
    return reply
  })
  const base = await listen(a)
  const r = await fetch(`${base}/t`, { method: 'POST' })
  await r.text()
  expect(r.status).toBe(404)
  expect(await waitFor(() => a.pgPool.stats().leased === 0, 5000)).toBe(true)
  expect(await notes()).toEqual([])
})

test('redirect on a transaction route commits', async () => {
  const a = await umbrella()
  a.post('/t', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into note values ('redir')`
    return reply.redirect('/elsewhere', 303)
  })
  const base = await listen(a)
  const r = await fetch(`${base}/t`, { method: 'POST', redirect: 'manual' })
  await r.text()
  expect(r.status).toBe(303)
  expect(await notes()).toEqual(['redir'])
})

test('204 on a transaction route commits', async () => {
  const a = await umbrella()
  a.post('/t', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into note values ('nc')`
    return reply.code(204).send()
  })
  const base = await listen(a)
  const r = await fetch(`${base}/t`, { method: 'POST' })
  await r.text()
  expect(r.status).toBe(204)
  expect(await notes()).toEqual(['nc'])
})

test('process pressure 503 on a transaction route: leaves, no lease, gate released', async () => {
  const a = await umbrella({ backpressure: { process: { maxHeapUsedBytes: 1, sampleInterval: 50 } } })
  a.post('/t', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into note values ('x')`
    return { ok: true }
  })
  const base = await listen(a)
  let status = 0
  await waitFor(async () => {
    const r = await fetch(`${base}/t`, { method: 'POST' })
    await r.text()
    status = r.status
    return status === 503
  }, 5000)
  expect(status).toBe(503)
  expect(a.pgPool.stats().leased).toBe(0)
  const h = await fetch(`${base}/health/live`)
  expect(h.status).toBe(200)
  const m = await fetch(`${base}/metrics`)
  expect(m.status).toBe(200)
})

test('hijacked transaction route with failed COMMIT: 500 seen by metrics and logs', async () => {
  const a = await umbrella()
  a.post('/h', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into note values ('h')`
    await request.db`insert into child values (1, 999)`
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.end('done')
  })
  const base = await listen(a)
  const r = await fetch(`${base}/h`, { method: 'POST' })
  await r.text()
  expect(r.status).toBe(500)
  expect(await notes()).toEqual([])
  await waitFor(() => a.pgPool.stats().leased === 0)
  const metrics = await (await fetch(`${base}/metrics`)).text()
  expect(metrics).toMatch(
    /pg_pool_http_request_duration_seconds_count\{method="POST",route="\/h",status_class="5xx"\} 1/,
  )
  const tx = sdk.spans().find((s) => s.name === 'transaction')
  expect(tx?.attributes['fastify_pg_pool.transaction.outcome']).toBe('commit_failed')
  expect(logs.some((l) => l.msg === 'request completed' && (l.res as { statusCode: number }).statusCode === 500)).toBe(
    true,
  )
  expect(logs.some((l) => l.msg === 'the route transaction of a reply written on reply.raw was not committed')).toBe(
    true,
  )
})

test('raw without hijack on a transaction route: read-your-writes', async () => {
  const a = await umbrella()
  a.post('/raw', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into note values ('raw')`
    reply.raw.writeHead(201, { 'content-type': 'text/plain' })
    reply.raw.end('done')
  })
  const base = await listen(a)
  const r = await fetch(`${base}/raw`, { method: 'POST' })
  expect(await r.text()).toBe('done')
  expect(r.status).toBe(201)
  expect(await notes()).toEqual(['raw'])
  await waitFor(() => a.pgPool.stats().leased === 0)
  expect(a.pgPool.stats().leased).toBe(0)
})

test('huge JSON payload on a transaction route', async () => {
  const a = await umbrella()
  a.post('/big', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into note values ('big')`
    return { items: Array.from({ length: 200_000 }, (_, i) => ({ i, s: 'x'.repeat(20) })) }
  })
  const base = await listen(a)
  const r = await fetch(`${base}/big`, { method: 'POST' })
  const body = (await r.json()) as { items: unknown[] }
  expect(r.status).toBe(200)
  expect(body.items.length).toBe(200_000)
  expect(await notes()).toEqual(['big'])
})

test('handlerTimeout on a transaction route that writes nothing in time: 503, rolled back, lease back', async () => {
  const a = await umbrella()
  a.post('/slow', { handlerTimeout: 300, config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into note values ('slow')`
    await request.db`select pg_sleep(1)`.catch(() => {})
    return { ok: true }
  })
  const base = await listen(a)
  const r = await fetch(`${base}/slow`, { method: 'POST' })
  await r.text()
  expect(r.status).toBeGreaterThanOrEqual(500)
  expect(await waitFor(() => a.pgPool.stats().leased === 0, 5000)).toBe(true)
  expect(await notes()).toEqual([])
})

test('handlerTimeout on a transaction route that writes reply.raw without hijack', async () => {
  const a = await umbrella()
  a.post('/slowraw', { handlerTimeout: 300, config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into note values ('slowraw')`
    await new Promise((r) => setTimeout(r, 600))
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.end('late')
  })
  const base = await listen(a)
  const r = await fetch(`${base}/slowraw`, { method: 'POST' })
  const text = await r.text().catch(() => 'err')
  expect(await waitFor(() => a.pgPool.stats().leased === 0, 5000)).toBe(true)
  expect(r.status, text).toBeGreaterThanOrEqual(500)
  expect(await notes()).toEqual([])
})

test('handlerTimeout fires during a slow COMMIT: 503 COMMIT_UNKNOWN, never a 2xx for work not committed', async () => {
  const a = await umbrella()
  a.post('/t', { handlerTimeout: 300, config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into slow (id) values (1)`
    return { ok: true }
  })
  const base = await listen(a)
  const r = await fetch(`${base}/t`, { method: 'POST' })
  await r.text()
  await waitFor(() => a.pgPool.stats().leased === 0, 5000)
  const committed = await db.sql`select id from slow`
  if (r.status < 300) expect(committed).toHaveLength(1)
  else expect(r.status).toBe(503)
})

test('README example of the umbrella: a move with no stock left is a 409 and rolled back', async () => {
  const a = await umbrella()
  await a.db`create table if not exists items (id int primary key, name text not null, stock int not null check (stock >= 0))`
  await a.db`insert into items values (1, 'apple', 10), (2, 'pear', 0) on conflict (id) do nothing`
  const id = { type: 'integer', minimum: 1 }
  a.post<{ Params: { from: number; to: number } }>(
    '/items/:from/move/:to',
    {
      schema: { params: { type: 'object', properties: { from: id, to: id }, required: ['from', 'to'] } },
      config: { db: { transaction: true } },
    },
    async (request, reply) => {
      const { from, to } = request.params
      const added = await request.db`update items set stock = stock + 1 where id = ${to} returning id`
      const [taken] = await request.db<
        { stock: number }[]
      >`update items set stock = stock - 1 where id = ${from} returning stock`
      if (!added.length || !taken) return reply.code(404).send({ message: 'no such item' })
      return { moved: 1, left: taken.stock }
    },
  )
  expect((await a.inject({ method: 'POST', url: '/items/2/move/1' })).statusCode).toBe(409)
  expect((await a.inject({ method: 'POST', url: '/items/1/move/9' })).statusCode).toBe(404)
  const ok = await a.inject({ method: 'POST', url: '/items/1/move/2' })
  expect(ok.json()).toEqual({ moved: 1, left: 9 })
  expect(await db.sql`select id, stock from items order by id`).toEqual([
    { id: 1, stock: 9 },
    { id: 2, stock: 1 },
  ])
  await a.db`drop table items`
})

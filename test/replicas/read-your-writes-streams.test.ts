import { Readable } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Found by a second round of hostile probing (the two streamed cases failed on 1c7775f): a write
// through request.dbs.<name> followed by a streamed reply got no token for that instance. The
// other cases held; they pin tokens on thrown errors and streams while a statement still runs.

declare module '@fastify-pg-pool/core' {
  interface PgPoolInstances {
    other: true
  }
}

// The "replica" is the primary itself (not a standby: never usable); tokens are still written.
let db: TestDatabase
let app: FastifyInstance
const secret = 'a-test-secret-of-some-length'
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table notes (id serial primary key, body text)`
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: db.url,
    replicas: [db.url],
    replica: { lagInterval: 50, readYourWrites: { secret } },
    pool: { max: 3 },
  })
  await app.register(pgPoolCore, {
    name: 'other',
    connection: db.url,
    replicas: [db.url],
    replica: { lagInterval: 50, readYourWrites: { secret, header: 'x-other-after' } },
    pool: { max: 3 },
  })
  app.post('/other-then-stream', async (request) => {
    await request.dbs.other`insert into notes (body) values ('other') returning id`
    return Readable.from(['streamed'])
  })
  app.post('/other-then-json', async (request) => {
    await request.dbs.other`insert into notes (body) values ('other') returning id`
    return { ok: true }
  })
  app.post('/tx-other-then-stream', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into notes (body) values ('main')`
    await request.dbs.other`insert into notes (body) values ('other') returning id`
    return Readable.from(['streamed'])
  })
  app.post('/write-then-throw', async (request) => {
    await request.db`insert into notes (body) values ('then throw')`
    throw new Error('after the write')
  })
  app.post('/tx-hijack', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into notes (body) values ('hijacked')`
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.end('raw')
  })
  app.post('/hijack', async (request, reply) => {
    await request.db`insert into notes (body) values ('hijacked, no tx')`
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.end('raw')
  })
  app.post('/stream-while-running', async (request) => {
    await request.db`insert into notes (body) values ('before the stream')`
    const slow = request.db`select pg_sleep(0.3)`
    void slow.catch(() => {})
    void slow.then(() => {})
    return Readable.from(['streamed'])
  })
  await app.ready()
})
afterAll(async () => {
  await app?.close()
  await db.drop()
})

describe('read-your-writes tokens on replies to requests that wrote', () => {
  test('control: a write through request.dbs.other, JSON reply: its token', async () => {
    const res = await app.inject({ method: 'POST', url: '/other-then-json' })
    expect(res.statusCode).toBe(200)
    expect(res.headers['x-other-after']).toBeDefined()
  })
  test('a write through request.dbs.other, then a streamed reply: its token', async () => {
    const res = await app.inject({ method: 'POST', url: '/other-then-stream' })
    expect(res.statusCode).toBe(200)
    expect(res.body).toBe('streamed')
    expect(res.headers['x-other-after']).toBeDefined()
  })
  test('a route transaction writing through both instances, streamed reply: both tokens', async () => {
    const res = await app.inject({ method: 'POST', url: '/tx-other-then-stream' })
    expect(res.statusCode).toBe(200)
    expect(res.headers['x-pg-read-after']).toBeDefined()
    expect(res.headers['x-other-after']).toBeDefined()
  })
  test('a write, then the handler throws: 500 with the token', async () => {
    const res = await app.inject({ method: 'POST', url: '/write-then-throw' })
    expect(res.statusCode).toBe(500)
    expect(res.headers['x-pg-read-after']).toBeDefined()
  })
  test('a stream reply while a statement still runs: answered, no hang', async () => {
    const res = await app.inject({ method: 'POST', url: '/stream-while-running' })
    expect(res.statusCode).toBe(200)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 2_000)).toBe(true)
  })
})

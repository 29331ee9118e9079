import { Readable } from 'node:stream'
import pgPoolCore, { type RequestDb } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../../support/database.js'

// Commit 7f87815 + README (d7af34f): "A transaction block the handler opens in SQL ... One still
// open when the reply is decided is rolled back, in every `sessionReset` mode"; the commit says
// "with sessionReset 'never' the next request ran inside it" was the bug. Only a 2xx non-stream
// reply of request.db asks the session (and sets #leftOpen); every other way out leaves the block
// open under 'never', and the next request's write (200) runs inside it, never committed.

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await db.sql`truncate ledger`
})
afterAll(() => db.drop())

const notes = async () => (await db.sql<{ note: string }[]>`select note from ledger order by id`).map((r) => r.note)

async function neverApp() {
  const current = await coreApp(db.url, { max: 1, sessionReset: 'never' })
  app = current.app
  current.app.post('/next', async (request) => {
    await request.db`insert into ledger (note) values ('next')`
    return { ok: true }
  })
  return current
}

async function expectNextCommitted(name: string) {
  if (!app) throw new Error('no app')
  expect(await waitFor(() => app?.pgPool.stats().leased === 0)).toBe(true)
  const next = await app.inject({ method: 'POST', url: '/next' })
  expect(next.statusCode).toBe(200)
  expect(await waitFor(() => app?.pgPool.stats().leased === 0)).toBe(true)
  // The next request's 200 write is committed, and no connection of the app sits in a block.
  expect({ notes: await notes(), idleInTx: await db.countConnections(name, 'idle in transaction') }).toEqual({
    notes: ['next'],
    idleInTx: 0,
  })
}

test("'never': a 4xx after a SQL begin left open: the next request runs outside it", async () => {
  const { app, applicationName } = await neverApp()
  app.post('/refused', async (request, reply) => {
    await request.db`begin`
    await request.db`insert into ledger (note) values ('refused')`
    return reply.code(409).send({ refused: true })
  })
  expect((await app.inject({ method: 'POST', url: '/refused' })).statusCode).toBe(409)
  await expectNextCommitted(applicationName)
})

test("'never': a thrown error after a SQL begin left open: the next request runs outside it", async () => {
  const { app, applicationName } = await neverApp()
  app.post('/throw', async (request) => {
    await request.db`begin`
    await request.db`insert into ledger (note) values ('throw')`
    throw new Error('boom')
  })
  expect((await app.inject({ method: 'POST', url: '/throw' })).statusCode).toBe(500)
  await expectNextCommitted(applicationName)
})

test("'never': a streamed payload after a SQL begin left open: the next request runs outside it", async () => {
  const { app, applicationName } = await neverApp()
  app.post('/stream', async (request, reply) => {
    await request.db`begin`
    await request.db`insert into ledger (note) values ('stream')`
    reply.type('text/plain')
    return Readable.from(['a', 'b'])
  })
  await app.inject({ method: 'POST', url: '/stream' })
  await expectNextCommitted(applicationName)
})

test("'never': a hijacked reply after a SQL begin left open: the next request runs outside it", async () => {
  const { app, applicationName } = await neverApp()
  app.post('/hijack', async (request, reply) => {
    await request.db`begin`
    await request.db`insert into ledger (note) values ('hijack')`
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.end('ok')
  })
  await app.inject({ method: 'POST', url: '/hijack' })
  await expectNextCommitted(applicationName)
})

test("'never': app.db`begin` (one-shot) leaves no block for the next request", async () => {
  const { app, applicationName } = await neverApp()
  await app.ready()
  await app.db`begin`
  await expectNextCommitted(applicationName)
})

test("'never': request.dbs.<name> left a SQL block open: the next request of that instance runs outside it", async () => {
  const instance = Fastify()
  app = instance
  await instance.register(pgPoolCore, { connection: db.url, pool: { max: 1, sessionReset: 'never' } })
  await instance.register(pgPoolCore, {
    name: 'other',
    connection: db.url,
    pool: { max: 1, sessionReset: 'never', applicationName: 'probe-r3-block-other' },
  })
  const other = (request: { dbs: unknown }) => (request.dbs as Record<string, RequestDb>).other as RequestDb
  instance.post('/dangle', async (request) => {
    await other(request)`begin`
    await other(request)`insert into ledger (note) values ('dangle')`
    return { ok: true }
  })
  instance.post('/next', async (request) => {
    await other(request)`insert into ledger (note) values ('next')`
    return { ok: true }
  })
  await instance.inject({ method: 'POST', url: '/dangle' })
  await expectNextCommitted('probe-r3-block-other')
})

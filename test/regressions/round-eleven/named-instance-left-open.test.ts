import pgPoolCore, { type RequestDb } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor } from '../../support/database.js'

// Commit 7f87815: a block the handler opened in SQL and left open makes the reply a 500
// FST_PG_POOL_COMMIT_FAILED instead of a 2xx for work rolled back. Only request.db's lease is
// asked (request-lease.ts onSend, leftBlockOpen); a named instance's lease (request.dbs.<name>)
// goes through finishOthers, which never asks: the client gets a 200 for a write that was rolled back.

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

test('request.dbs.<name>: a SQL begin left open is a 500 COMMIT_FAILED, not a 200 for a rolled-back write', async () => {
  app = Fastify()
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 1 } })
  await app.register(pgPoolCore, { name: 'other', connection: db.url, pool: { max: 1 } })
  app.post('/dangle', async (request) => {
    const other = (request.dbs as Record<string, RequestDb>).other as RequestDb
    await other`begin`
    await other`insert into ledger (note) values ('dangle')`
    return { ok: true }
  })
  const res = await app.inject({ method: 'POST', url: '/dangle' })
  expect(await waitFor(() => app?.pgPools.all().every((view) => view.stats().leased === 0) ?? false)).toBe(true)
  const rows = await db.sql`select note from ledger`
  expect({ status: res.statusCode, code: res.json().code, rows: rows.length }).toEqual({
    status: 500,
    code: 'FST_PG_POOL_COMMIT_FAILED',
    rows: 0,
  })
})

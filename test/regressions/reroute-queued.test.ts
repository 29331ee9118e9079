import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// After a failed session reset (the previous holder left a SQL-level PREPARE), statements queued in
// the lease are sent again in order, each once (a second round of hostile probing; held on 1c7775f,
// kept as a guard for the one-statement-at-a-time queue). A cursor or forEach as the request's first
// statement there is not resent: documented in the core README.

let db: TestDatabase
let current: TestApp | undefined
let app: FastifyInstance
let doB: (sql: FastifyInstance['db']) => Promise<unknown>
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
beforeEach(async () => {
  await db.sql`truncate ledger`
  current = await coreApp(db.url, { max: 1 })
  app = current.app
  app.post('/a', async (request) => {
    await request.db.unsafe('prepare leaked as select 1')
    return { ok: true }
  })
  app.post('/b', async (request) => ({ result: await doB(request.db as unknown as FastifyInstance['db']) }))
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

async function aThenB() {
  expect((await app.inject({ method: 'POST', url: '/a' })).statusCode).toBe(200)
  const b = await app.inject({ method: 'POST', url: '/b' })
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 2_000)).toBe(true)
  return b
}

describe('after a failed reset, B does not notice', () => {
  test('B sends Promise.all of inserts and a read: each runs once, in order', async () => {
    doB = async (sql) => {
      const r = await Promise.all([
        sql`insert into ledger (note) values ('1') returning note`,
        sql`insert into ledger (note) values ('2') returning note`,
        sql`select string_agg(note, ',' order by id) as notes from ledger`,
      ])
      return r[2]
    }
    const b = await aThenB()
    expect(b.statusCode, b.body).toBe(200)
    expect(b.json()).toEqual({ result: [{ notes: '1,2' }] })
    expect(await db.sql`select note from ledger order by id`).toEqual([{ note: '1' }, { note: '2' }])
  })

  test('B opens a begin() block first', async () => {
    doB = async (sql) => sql.begin(async (tx) => tx`insert into ledger (note) values ('tx') returning note`)
    const b = await aThenB()
    expect(b.statusCode, b.body).toBe(200)
    expect(await db.sql`select note from ledger order by id`).toEqual([{ note: 'tx' }])
  })
})

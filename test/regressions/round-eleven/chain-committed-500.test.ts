import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

// Commit 7f87815 is too broad: the handler's write WAS committed (COMMIT AND CHAIN, or
// `commit; begin` in one simple message), only an empty block (no statement ran in it) is open
// when it replies, yet the reply is a 500 FST_PG_POOL_COMMIT_FAILED, whose documented meaning is
// "nothing of it was committed". A client that retries writes twice.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
  await db.sql`truncate ledger`
})
afterAll(() => db.drop())

const notes = async () => (await db.sql<{ note: string }[]>`select note from ledger order by id`).map((r) => r.note)

test('COMMIT AND CHAIN: the write committed, the reply is not a 500 COMMIT_FAILED', async () => {
  current = await coreApp(db.url, { max: 1 })
  current.app.post('/chain', async (request) => {
    await request.db`begin`
    await request.db`insert into ledger (note) values ('chain')`
    await request.db`commit and chain`
    return { ok: true }
  })
  const res = await current.app.inject({ method: 'POST', url: '/chain' })
  expect({ notes: await notes(), status: res.statusCode }).toEqual({ notes: ['chain'], status: 200 })
})

test('`commit; begin` in one message: the write committed, the reply is not a 500 COMMIT_FAILED', async () => {
  current = await coreApp(db.url, { max: 1 })
  current.app.post('/cb', async (request) => {
    await request.db`begin`
    await request.db`insert into ledger (note) values ('cb')`
    await request.db.unsafe('commit; begin')
    return { ok: true }
  })
  const res = await current.app.inject({ method: 'POST', url: '/cb' })
  expect({ notes: await notes(), status: res.statusCode }).toEqual({ notes: ['cb'], status: 200 })
})

import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../../support/database.js'

// Attacks on commit 7f87815 (a SQL block left open: 500 COMMIT_FAILED) that held.

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

test("SAVEPOINT / RELEASE failing outside a block, caught ('never'): 200, the write committed", async () => {
  current = await coreApp(db.url, { max: 1, sessionReset: 'never' })
  current.app.post('/sp', async (request) => {
    await request.db`insert into ledger (note) values ('sp')`
    await request.db`savepoint a`.catch(() => {})
    await request.db`release savepoint a`.catch(() => {})
    return { ok: true }
  })
  const res = await current.app.inject({ method: 'POST', url: '/sp' })
  expect({ status: res.statusCode, notes: await notes() }).toEqual({ status: 200, notes: ['sp'] })
})

test('HEAD on a GET route that left a SQL block open: 500, nothing committed', async () => {
  current = await coreApp(db.url, { max: 1 })
  current.app.get('/h', async (request) => {
    await request.db`begin`
    await request.db`insert into ledger (note) values ('head')`
    return { ok: true }
  })
  const res = await current.app.inject({ method: 'HEAD', url: '/h' })
  expect({ status: res.statusCode, notes: await notes() }).toEqual({ status: 500, notes: [] })
})

test('reply.send() not awaited after a SQL begin left open: 500, nothing committed', async () => {
  current = await coreApp(db.url, { max: 1 })
  current.app.post('/s', (request, reply) => {
    void (async () => {
      await request.db`begin`
      await request.db`insert into ledger (note) values ('s')`
      reply.send({ ok: true })
    })()
  })
  const res = await current.app.inject({ method: 'POST', url: '/s' })
  expect({ status: res.statusCode, notes: await notes() }).toEqual({ status: 500, notes: [] })
})

test("max 1, 'never': ten left-open blocks in a row, each 500, the next write commits, nothing leased", async () => {
  current = await coreApp(db.url, { max: 1, sessionReset: 'never' })
  const { app } = current
  app.post('/dangle', async (request) => {
    await request.db`begin`
    await request.db`insert into ledger (note) values ('dangle')`
    return { ok: true }
  })
  app.post('/next', async (request) => {
    await request.db`insert into ledger (note) values ('next')`
    return { ok: true }
  })
  const statuses = await Promise.all(Array.from({ length: 10 }, () => app.inject({ method: 'POST', url: '/dangle' })))
  expect(statuses.map((r) => r.statusCode)).toEqual(Array(10).fill(500))
  expect((await app.inject({ method: 'POST', url: '/next' })).statusCode).toBe(200)
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  expect(await notes()).toEqual(['next'])
})

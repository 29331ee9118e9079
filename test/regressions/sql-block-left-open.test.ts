import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Found by hostile probing, round eleven (types and migration probe, "suspected"): a handler on a
// route without a transaction opens a block in SQL (`request.db\`begin\``, as code moved over from
// pg's `client.query('BEGIN')` does), writes, and returns without COMMIT. The connection's reset
// rolled the block back and the client got a 200 for work that was not committed; with
// `sessionReset: 'never'` the block stayed open and the next request's write ran inside it.
// Fixed (lease.ts leftBlockOpen, request-lease.ts onSend): when the request's command tags say it
// may have opened a block, the session is asked before the reply goes; a block still open is
// rolled back in every reset mode and the reply is a 500 FST_PG_POOL_COMMIT_FAILED.

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

describe.each(['always', 'rollback', 'never'] as const)('sessionReset %s', (sessionReset) => {
  test('a block opened in SQL and left open: 500 COMMIT_FAILED, nothing committed, the next request outside it', async () => {
    if (db.viaBouncer && sessionReset !== 'never') return
    current = await coreApp(db.url, { max: 1, sessionReset })
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
    const dangle = await app.inject({ method: 'POST', url: '/dangle' })
    expect({ status: dangle.statusCode, code: dangle.json().code }).toEqual({
      status: 500,
      code: 'FST_PG_POOL_COMMIT_FAILED',
    })
    expect(current.logs.some((line) => String(line.msg).includes('left a transaction block'))).toBe(true)
    const next = await app.inject({ method: 'POST', url: '/next' })
    expect(next.statusCode).toBe(200)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual(['next'])
  })
})

test('a block opened and committed in SQL: 200, committed (the question costs one round trip)', async () => {
  current = await coreApp(db.url, { max: 1 })
  current.app.post('/done', async (request) => {
    await request.db`begin`
    await request.db`insert into ledger (note) values ('done')`
    await request.db`commit`
    return { ok: true }
  })
  const res = await current.app.inject({ method: 'POST', url: '/done' })
  expect(res.statusCode).toBe(200)
  expect(await notes()).toEqual(['done'])
})

test('a failed statement the handler caught, outside any block: 200, the write before it committed', async () => {
  current = await coreApp(db.url, { max: 1 })
  current.app.post('/caught', async (request) => {
    await request.db`insert into ledger (note) values ('kept')`
    await request.db`select 1 / 0`.catch(() => {})
    return { ok: true }
  })
  const res = await current.app.inject({ method: 'POST', url: '/caught' })
  expect(res.statusCode).toBe(200)
  expect(await notes()).toEqual(['kept'])
})

test('a block opened in SQL that failed (aborted) and was left: 500, nothing committed', async () => {
  current = await coreApp(db.url, { max: 1 })
  current.app.post('/aborted', async (request) => {
    await request.db`begin`
    await request.db`insert into ledger (note) values ('lost')`
    await request.db`select 1 / 0`.catch(() => {})
    return { ok: true }
  })
  const res = await current.app.inject({ method: 'POST', url: '/aborted' })
  expect(res.statusCode).toBe(500)
  expect(await notes()).toEqual([])
})

test('a 4xx reply is left as it is (nothing asked): the block is rolled back', async () => {
  current = await coreApp(db.url, { max: 1 })
  current.app.post('/refused', async (request, reply) => {
    await request.db`begin`
    await request.db`insert into ledger (note) values ('refused')`
    return reply.code(409).send({ refused: true })
  })
  const res = await current.app.inject({ method: 'POST', url: '/refused' })
  expect(res.statusCode).toBe(409)
  expect(await notes()).toEqual([])
})

// Held (guards 687e826, d7fad15). What the user does: request A leaves a temp table on its session
// (default sessionReset) and another session holds a lock on it, so A's session reset (DISCARD
// TEMP) waits; request B gets the connection and its statement is written behind that reset.
// 1. B cancels its INSERT (`query.cancel()`, its own deadline), catches the FST_PG_POOL_ABORTED
//    and tries again. It should get: the cancelled INSERT never runs, the retry runs on another
//    connection (the first one is retired), a 200.
// 2. B's route has a handlerTimeout, which fires while its INSERT waits behind the reset. It should
//    get: Fastify's 503 (FST_ERR_HANDLER_TIMEOUT), the INSERT never runs, the lease ends.
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../../../support/database.js'
import { listen, startRequest } from '../../../support/http.js'
import { blockedReset } from '../blocked-reset-kit.js'

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

test('a handler that catches its cancelled statement and tries again gets it run', async () => {
  current = await coreApp(db.url, { max: 1 })
  const { app } = current
  const behind = blockedReset(db, current)
  app.post('/b', async (request) => {
    const insert = request.db`insert into ledger (note) values ('cancelled')`
    const outcome = insert.then(
      () => 'inserted',
      (error: { code?: string }) => error.code,
    )
    await sleep(300)
    insert.cancel()
    const first = await outcome
    const [row] = await request.db<{ id: number }[]>`insert into ledger (note) values ('again') returning id`
    return { first, again: row?.id !== undefined }
  })
  const b = await behind(() => app.inject({ method: 'POST', url: '/b' }))
  expect(b.statusCode, b.body).toBe(200)
  expect(b.json()).toEqual({ first: 'FST_PG_POOL_ABORTED', again: true })
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
  expect(await db.sql`select note from ledger`).toEqual([{ note: 'again' }])
})

test('a handlerTimeout behind the blocked reset: a 503, nothing written, the lease ends', async () => {
  current = await coreApp(db.url, { max: 1 })
  const { app } = current
  const behind = blockedReset(db, current)
  let ended: string | undefined
  app.get('/b', { handlerTimeout: 500 }, async (request) => {
    try {
      await request.db`insert into ledger (note) values ('timed out')`
      ended = 'inserted'
    } catch (error) {
      ended = (error as { code?: string }).code
      throw error
    }
    return { ok: true }
  })
  const base = await listen(app)
  expect(await behind(() => startRequest(`${base}/b`).done)).toBe(503)
  expect(await waitFor(() => ended !== undefined, 5_000)).toBe(true)
  expect(ended).toBe('FST_PG_POOL_ABORTED')
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
  await sleep(300)
  expect(await db.sql`select note from ledger`).toEqual([])
})

// What the user does: statementTimeout is 1 s. Request A leaves a temp table on its session and
// another session holds a lock on it, so A's session reset (DISCARD TEMP) waits. Request B gets
// the connection and its INSERT is written behind the waiting reset; the lock stays for longer
// than the client-side statement deadline (statementTimeout + 1 s).
// What they should get: either B's INSERT runs and B gets 200, or B gets an error and its INSERT
// never runs: never a 5xx for a row that is then written.
// Held: the reset's DISCARD TEMP meets the server's statement_timeout (RESET ALL keeps the startup
// value), the reset fails, and B, a request nobody aborted or cancelled, has its INSERT sent again
// on a new connection: a 200 and the row (no false FST_PG_POOL_ABORTED).
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../../../support/database.js'
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

test('an INSERT behind a reset that outlives the statement deadline: its answer tells the truth', async () => {
  current = await coreApp(db.url, { max: 1, statementTimeout: 1_000 })
  const { app } = current
  const behind = blockedReset(db, current)
  app.post('/b', async (request) => {
    await request.db`insert into ledger (note) values ('b')`
    return { ok: true }
  })
  const b = await behind(async () => {
    const pending = app.inject({ method: 'POST', url: '/b' })
    // The lock stays past the deadline (1 s + 1 s grace), then goes.
    await Promise.race([pending, sleep(4_000)])
    return pending
  })
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
  await sleep(500)
  const rows = await db.sql`select note from ledger`
  expect(b.statusCode, b.body).toBe(200)
  expect(rows).toEqual([{ note: 'b' }])
})

// What the user does: request A leaves a temp table on its session (default sessionReset), and
// another session holds a lock on that table, so A's session reset (DISCARD TEMP) waits. Request B
// gets the connection and sends an INSERT (written behind the waiting reset), then cancels it with
// postgres.js's `query.cancel()` (its own deadline, say) before it has run.
// What they should get: the cancelled INSERT does not run (it fails with FST_PG_POOL_ABORTED, as a
// statement cancelled while still queued does), and the handler sees that.
// What they got: the cancel request stopped the reset (the statement the backend was running); the
// failed reset made the pool send B's INSERT again on another connection, where it ran and
// committed: the handler's cancelled query resolved, and the row is there.
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
})
afterAll(() => db.drop())

test('a statement the handler cancelled behind a reset its cancel failed is not sent again elsewhere', async () => {
  current = await coreApp(db.url, { max: 1 })
  const { app } = current
  const behind = blockedReset(db, current)
  app.post('/b', async (request) => {
    const insert = request.db`insert into ledger (note) values ('b')`
    const outcome = insert.then(
      () => 'inserted',
      (error: { code?: string }) => error.code,
    )
    await sleep(300)
    insert.cancel()
    return { outcome: await outcome }
  })
  const b = await behind(() => app.inject({ method: 'POST', url: '/b' }))
  expect(b.json()).toEqual({ outcome: 'FST_PG_POOL_ABORTED' })
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
  expect(await db.sql`select note from ledger`).toEqual([])
})

// What the user does: a handler sends a statement it does not await (an audit row, written
// fire-and-forget: `void request.db\`insert ...\``) and returns; the pool's reply waits for the
// request's statements to end (README: the lease ends, its writes committed, then the reply goes).
// statementTimeout is 1 s. The request's connection was handed over with the previous request's
// session reset still waiting on a lock (its DISCARD TEMP), which the server's statement_timeout
// then fails: the pool sends the request's statements again on a new connection.
// What they should get: as on any other connection: the statement runs, the row is written, 200.
// Held: the statement is sent again and runs (the reroute is not refused as a statement sent
// after the handler finished).
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../../../support/database.js'
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

test.each([false, true])(
  'transaction %s: a statement the handler did not await, behind a reset that fails, still runs',
  async (transaction) => {
    current = await coreApp(db.url, { max: 1, statementTimeout: 1_000 })
    const { app } = current
    const behind = blockedReset(db, current)
    let outcome: string | undefined
    app.post('/b', { config: { db: { transaction } } }, async (request) => {
      void request.db`insert into ledger (note) values ('audit')`.then(
        () => {
          outcome = 'inserted'
        },
        (error: { code?: string }) => {
          outcome = error.code
        },
      )
      return { ok: true }
    })
    const b = await behind(() => app.inject({ method: 'POST', url: '/b' }))
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(b.statusCode, b.body).toBe(200)
    expect(await waitFor(() => outcome !== undefined, 3_000)).toBe(true)
    expect(outcome).toBe('inserted')
    expect(await db.sql`select note from ledger`).toEqual([{ note: 'audit' }])
  },
)

// What the user does: request A leaves a temp table on its session (default sessionReset), and
// another session holds a lock on that table, so A's session reset (DISCARD TEMP) waits. Request B
// gets the connection; its INSERT is written behind the waiting reset. B's client hangs up.
// What they should get: B's INSERT never runs. The README: after a hang-up "what runs is stopped",
// "nothing runs on behalf of a finished request".
// What they got: B's abort sent its cancel request, which stopped the reset (the statement the
// backend ran); the failed reset made the pool move B to another connection and send its INSERT
// again there, after the hang-up: the row was committed for a request whose client was gone
// (the server had refused it on the first connection).
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
})
afterAll(() => db.drop())

test.each([
  ['a plain route', { transaction: false }],
  ['a transaction route', { transaction: true }],
] as const)(
  '%s: a statement written behind a reset that a hang-up cancelled is not sent again elsewhere',
  async (_, db_) => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    const behind = blockedReset(db, current)
    let bEnded: string | undefined
    app.get('/b', { config: { db: db_ } }, async (request) => {
      try {
        await request.db`insert into ledger (note) values ('b')`
        bEnded = 'inserted'
      } catch (error) {
        bEnded = (error as { code?: string }).code
        throw error
      }
      return { ok: true }
    })
    const url = await listen(app)

    // B's INSERT is written behind the waiting reset; then B's client hangs up.
    await behind(async () => {
      const b = startRequest(`${url}/b`)
      expect(await waitFor(() => app.pgPool.stats().leased === 1, 5_000)).toBe(true)
      await sleep(300)
      b.abort()
      expect(await b.done).toBe('aborted')
      expect(await waitFor(() => bEnded !== undefined, 5_000)).toBe(true)
    })
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    await sleep(300)
    expect(bEnded).toBe('FST_PG_POOL_ABORTED')
    expect(await db.sql`select note from ledger`).toEqual([])
  },
)

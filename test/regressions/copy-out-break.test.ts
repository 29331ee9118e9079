import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Found by hostile probing (failed before the fix): a handler that stops reading a COPY TO STDOUT the usual way, `break` out of
// `for await (const chunk of copy)` (which destroys the stream). README: "a COPY TO STDOUT the
// handler stopped reading is read on and cancelled, and its connection retired". abandonCopy
// (postgres-adapter.ts) returns early for a stream already destroyed: nothing reads on, no cancel.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const BIG = "copy (select i, repeat('x', 500) from generate_series(1, 3000000) i) to stdout"

describe('a COPY TO STDOUT left with break', () => {
  for (const tx of [false, true]) {
    test(`${tx ? 'transaction route' : 'plain route'}: 200, lease back, its backend does not stay busy, next served`, async () => {
      current = await coreApp(db.url, { max: 1, acquireTimeout: 2_000, statementTimeout: 20_000 })
      const { app, applicationName } = current
      app.get('/head', tx ? { config: { db: { transaction: true } } } : {}, async (request) => {
        const copy = await request.db.unsafe(BIG).readable()
        let chunks = 0
        for await (const _chunk of copy) if (++chunks >= 5) break
        return { chunks }
      })
      app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
      const first = await app.inject('/head')
      const back = await waitFor(() => app.pgPool.stats().leased === 0, 5_000)
      const backends = () =>
        db.admin<{ state: string; wait_event: string | null }[]>`select state, wait_event from pg_stat_activity
          where application_name = ${applicationName} and state <> 'idle'`
      const quiet = await waitFor(async () => (await backends()).length === 0, 5_000)
      const left = await backends()
      const next = await app.inject('/next')
      // On a transaction route the cancelled COPY aborts the transaction: a 500 COMMIT_FAILED is
      // what the README's "read on and cancelled" implies there, and is accepted.
      const answered = tx && first.statusCode === 500 ? first.json().code : first.statusCode
      // Observed: plain route back false (the lease held until statementTimeout + 1 s), left
      // [{ state: 'active', wait_event: 'ClientWrite' }], next 503; transaction route 500
      // FST_PG_POOL_COMMIT_FAILED ("the connection was lost"), the same backend left in ClientWrite.
      expect({ first: answered, back, quiet, left, next: next.statusCode }).toEqual({
        first: tx && answered === 'FST_PG_POOL_COMMIT_FAILED' ? answered : 200,
        back: true,
        quiet: true,
        left: [],
        next: 200,
      })
    })
  }
})

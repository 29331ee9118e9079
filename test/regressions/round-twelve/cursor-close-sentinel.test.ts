import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { waitFor } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'

// DEFECT (probe-sql-surface, low). What the user does: ends a callback cursor early the way
// postgres.js documents it (its README, "Cursors": "return sql.CLOSE" from the callback; `sql.END`
// is the same), with `request.db` as `sql`: the core README lists `.cursor()` among request.db's
// postgres.js API. What they see: `request.db.CLOSE` is undefined, the callback returns undefined,
// and the cursor reads every remaining batch (here 10 batches instead of 1; on a large export, the
// whole table, holding the connection). In TypeScript `request.db.CLOSE` does not compile
// (LeaseDb extends postgres.ISql, which has no CLOSE), and nothing in the README says how to end a
// callback cursor early without making it fail. What they should see: `request.db.CLOSE` (and
// `END`, and on `app.db` and begin() handles) being postgres.js's sentinel, which the adapter
// already knows how to honour (postgres-adapter.ts `closeCursor`).
//
// Cause: packages/core/src/query-api.ts `addQueryApi` (around line 36) copies unsafe, file, notify,
// json, array, typed and types onto the handle, not CLOSE/END; packages/core/src/types.ts `LeaseDb`
// does not declare them.
//
// Suggested fix: `target.CLOSE = target.END = helpers.CLOSE` in addQueryApi (the helpers client's
// CLOSE is postgres.js's module-wide sentinel), and `readonly CLOSE: {}; readonly END: {}` on
// LeaseDb / ReplicaDb.

const fx = noteTable()
failOnProcessErrors()

test('a callback cursor that returns request.db.CLOSE after its first batch reads no more', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.get('/first-batch', async (request) => {
    const sql = request.db as unknown as { CLOSE: unknown }
    let batches = 0
    await request.db`select i from generate_series(1, 100) i`.cursor(10, () => {
      batches++
      return sql.CLOSE as never
    })
    return { batches, sentinel: sql.CLOSE !== undefined }
  })
  const res = await app.inject('/first-batch')
  expect(res.json()).toEqual({ batches: 1, sentinel: true })
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
})

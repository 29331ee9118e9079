import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Found by hostile probing, second round on client disconnects (195d3bd), failing before the fix.
// A handler reads a COPY TO STDOUT with `for await`, doing some async work per chunk (so the
// stream's buffer fills and postgres.js pauses its socket: `push` answered false), then stops
// with `break` (or destroy()). README: "a COPY TO STDOUT the handler stopped reading is read on
// and cancelled, and its connection retired"; the lease "comes back within 100 ms".
// 195d3bd patches `push` for pushes made AFTER the destroy, but a socket paused BEFORE it is never
// resumed (the destroyed stream's _read is never called again): the lease is held until the
// statement deadline.

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

const BIG = "copy (select 'z' || i, repeat('z', 300) from generate_series(1, 400000) i) to stdout"

describe('a COPY TO STDOUT whose slow reader stops after its buffer filled', () => {
  for (const how of ['break', 'destroy()', 'destroy(error)'] as const) {
    for (const tx of [false, true]) {
      test(`${tx ? 'transaction' : 'plain'} route, ${how}: lease back within 3 s, next request served (statementTimeout 15 s)`, async () => {
        current = await coreApp(db.url, { max: 1, acquireTimeout: 3_000, statementTimeout: 15_000 })
        const { app, applicationName } = current
        app.get('/slow', tx ? { config: { db: { transaction: true } } } : {}, async (request) => {
          const copy = await request.db.unsafe(BIG).readable()
          copy.on('error', () => {})
          let chunks = 0
          for await (const _chunk of copy) {
            chunks++
            // the per-chunk work is slower than the server: the buffer fills
            await waitFor(() => copy.readableLength >= copy.readableHighWaterMark, 5_000, 5)
            if (chunks >= 2) {
              if (how === 'destroy()') copy.destroy()
              else if (how === 'destroy(error)') copy.destroy(new Error('reader gave up'))
              break
            }
          }
          return { chunks }
        })
        app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
        const t0 = Date.now()
        const first = await app.inject('/slow')
        const back = await waitFor(() => app.pgPool.stats().leased === 0, 3_000)
        const heldMs = Date.now() - t0
        const next = await app.inject('/next')
        // A retired connection's backend ends once its cancel landed: waited for, not timed.
        const clean = await waitFor(
          async () =>
            (
              await db.admin<{ state: string }[]>`select state from pg_stat_activity
                where application_name = ${applicationName} and state <> 'idle'`
            ).length === 0,
          10_000,
        )
        const busy = clean ? [] : [{ state: 'busy' }]
        // On a transaction route the cancelled COPY aborts the transaction: 500 COMMIT_FAILED is accepted.
        const firstOk = first.statusCode === 200 || (tx && first.json().code === 'FST_PG_POOL_COMMIT_FAILED')
        expect({ firstOk, back, next: next.statusCode, busy: busy.length }).toEqual({
          firstOk: true,
          back: true,
          next: 200,
          busy: 0,
        })
        expect(heldMs).toBeLessThan(6_000)
      })
    }
  }
})

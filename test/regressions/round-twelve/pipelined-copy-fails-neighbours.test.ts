import { finished } from 'node:stream/promises'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { waitFor } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'

// DEFECT (probe-sql-surface). What the user does: a pipelined route (`config.db: { pipeline: true }`)
// runs a COPY through `.writable()` / `.readable()` (pipeline-attacks.test.ts and
// copy-stream-errors.test.ts treat COPY there as supported), and other pipelined requests join the
// shared connection while the COPY's stream is open (max: 1 here; in production whenever no
// connection is idle). What they see: every neighbour's statement fails at once with a 500
// `COPY_IN_PROGRESS: You cannot execute queries during copy` (not an FST_PG_POOL_ code, no
// Retry-After), for a statement of another request. What they should see (README, pipelined
// routes: "A statement waits behind the ones queued before it on the same connection
// (head-of-line blocking)"): the neighbour's statement waits for the COPY to end and is served,
// as it is behind a cursor (postgres-adapter.ts holds statements behind a cursor: assumption 8b).
//
// Cause: postgres.js's connection.js `execute()` refuses any query while a COPY stream is open
// (`if (stream) return queryError(q, COPY_IN_PROGRESS)`). packages/core/src/postgres-adapter.ts
// `createServerClient().send` (around line 660) holds a query in `waiting` only behind a query
// that is `describeFirst` or has a `cursorFn` (`blocking`); a COPY is neither, so the neighbour's
// query is handed to postgres.js, refused synchronously, and `sendBuilt` takes it as that query's
// own build failure. The pool (pool.ts / shared-connections.ts) keeps letting pipelined requests
// join a connection whose COPY runs.
//
// Suggested fix: make a COPY block the client like a cursor: when `resolveTracked` first sees the
// stream (postgres-adapter.ts, where `this.streaming = true` is set), mark the query as the
// client's `blocking` one, so that what is sent meanwhile waits in `waiting` and is handed over at
// the COPY's end (`onEnd`); or refuse COPY on pipelined routes with FST_PG_POOL_PIPELINED and
// document it.

const fx = noteTable()
failOnProcessErrors()
const pipelined = { config: { db: { pipeline: true } } } as const

for (const direction of ['COPY FROM STDIN (writable)', 'COPY TO STDOUT (readable)'] as const) {
  test(`${direction} on a pipelined route: a neighbour joining the connection meanwhile is served, not failed`, async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    let markOpen: () => void = () => {}
    const open = new Promise<void>((resolve) => {
      markOpen = resolve
    })
    let release: () => void = () => {}
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    app.post('/copy', pipelined, async (request) => {
      if (direction === 'COPY FROM STDIN (writable)') {
        const writable = await request.db`copy note (body) from stdin`.writable()
        writable.write('copied\n')
        markOpen()
        await gate
        writable.end()
        await finished(writable)
        return { ok: true }
      }
      const readable = await request.db`copy (select i from generate_series(1, 100000) i) to stdout`.readable()
      let bytes = 0
      for await (const chunk of readable) {
        bytes += String(chunk).length
        markOpen()
        await gate
      }
      return { ok: bytes > 0 }
    })
    app.get('/one', pipelined, async (request) => (await request.db`select 1 as one`)[0])

    const copy = app.inject({ method: 'POST', url: '/copy' })
    await open
    // The neighbour arrives while the COPY's stream is open; the COPY goes on once it was sent.
    const neighbour = app.inject('/one')
    // Sent on the shared connection (two statements of pipelined requests there), or answered.
    await Promise.race([neighbour, waitFor(() => app.pgPool.stats().sharedQueries >= 2, 5_000)])
    release()
    const [copied, one] = await Promise.all([copy, neighbour])

    expect(copied.statusCode).toBe(200)
    expect(copied.json()).toEqual({ ok: true })
    expect({ status: one.statusCode, body: one.json() }).toEqual({ status: 200, body: { one: 1 } })
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  })
}

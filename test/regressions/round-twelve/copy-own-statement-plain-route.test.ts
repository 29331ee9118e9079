import { finished } from 'node:stream/promises'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { noteTable } from '../../support/note-table.js'

// DEFECT (probe-fixes-adapter, medium). What the user does: on a plain route (no transaction, not
// pipelined: the default), opens a COPY with `.writable()` or `.readable()` and, before ending or
// reading it to the end, runs another statement of the same request and awaits it (a lookup per
// batch, a "select count(*)" progress check, a mistaken order of awaits).
// What they see: the request hangs; the statement is never sent, the COPY never ends; at the
// statement deadline (statementTimeout, 30 s by default, + 1 s) the request fails with 503
// FST_PG_POOL_QUERY_TIMEOUT (or 57014) and the COPY's rows are lost. With statementTimeout: 0 it
// hangs until handlerTimeout, or for good. What they should see: what round twelve made route
// transactions, begin() blocks and pipelined routes do (commit 60d9641: "a statement behind a COPY
// of its own holder is refused as postgres.js refuses it, not held (held, a holder awaiting it
// before ending its COPY would wait for good)"): the statement fails at once with
// COPY_IN_PROGRESS, the handler goes on, ends its COPY, and the rows are written. (The sibling
// probe in this directory shows those three route kinds answer COPY_IN_PROGRESS at once.)
//
// Cause: the fix is in packages/core/src/postgres-adapter.ts `send` (the same-owner exception to
// `blocking`), but on a plain route the statement never gets there: packages/core/src/lease.ts
// `#deliver` (around line 654) queues every holder statement in `#queued` while another of the
// holder's runs (`#holderRunning > 0 && #oneAtATime`), and the COPY counts as running until its
// stream is ended or read out, which the holder is waiting to do.
//
// Suggested fix: in `#deliver`, while the holder's running statement is a COPY whose stream is
// open (`query.stream !== undefined`, not ended), refuse the new statement at once with
// COPY_IN_PROGRESS (postgres.js's error), as `send` does for the other route kinds, instead of
// queueing it behind the COPY.

const fx = noteTable()
failOnProcessErrors()

test('plain route, COPY FROM STDIN open: a statement of the same request fails at once, the COPY completes', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1, statementTimeout: 4000 })
  const { app } = fx.current
  app.post('/copy', async (request) => {
    const writable = await request.db`copy note (body) from stdin`.writable()
    writable.write('copied\n')
    let seen: string
    try {
      await request.db`select 1 as one`
      seen = 'ran'
    } catch (error) {
      seen = String((error as { code?: unknown }).code)
    }
    writable.end()
    await finished(writable)
    return { seen }
  })
  const res = await app.inject({ method: 'POST', url: '/copy' })
  expect({ status: res.statusCode, body: res.json() }).toEqual({ status: 200, body: { seen: 'COPY_IN_PROGRESS' } })
  expect(await fx.notes()).toEqual(['copied'])
})

test('plain route, COPY TO STDOUT not read to the end: a statement of the same request fails at once', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1, statementTimeout: 4000 })
  const { app } = fx.current
  app.get('/copy', async (request) => {
    const readable = await request.db`copy (select i from generate_series(1, 200000) i) to stdout`.readable()
    let seen = 'not run'
    let bytes = 0
    for await (const chunk of readable) {
      bytes += String(chunk).length
      if (seen === 'not run') {
        try {
          await request.db`select 1 as one`
          seen = 'ran'
        } catch (error) {
          seen = String((error as { code?: unknown }).code)
        }
      }
    }
    return { seen, whole: bytes > 1_000_000 }
  })
  const res = await app.inject('/copy')
  expect({ status: res.statusCode, body: res.json() }).toEqual({
    status: 200,
    body: { seen: 'COPY_IN_PROGRESS', whole: true },
  })
})

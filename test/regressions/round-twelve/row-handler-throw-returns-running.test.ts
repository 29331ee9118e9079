import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { uniqueName, waitFor } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'

// DEFECT (probe-sql-surface). What the user does: a handler streams a query with
// `request.db\`...\`.forEach(fn)` (or reads a column through a custom `connection.types` parser)
// and `fn` (the parser) throws on a row, as code that validates, transforms or writes each row
// (`reply.raw.write` after the client left) does. What they see: the request answers 500 at once,
// and its connection goes back to the pool (stats: leased 0, idle 1) while the server still runs
// the request's statement to its end (up to statementTimeout, 30 s by default): the next request
// on the connection waits behind a statement of a request that is over, and the handler's `fn` is
// called again for every remaining row after its request ended (each call throwing). What they
// should see (README, `request.db`: "The connection goes back once the reply is decided ... and
// every query the request started has ended"; "nothing runs on behalf of a finished request"):
// the lease held until the statement has ended (or the statement stopped), `fn` never called for
// a finished request.
//
// Cause: postgres.js (connection.js `data()`) catches a throw from a DataRow's handling (the
// forEach callback, a parser, a row transform) and rejects the query at once with `errored(e)`,
// before its CommandComplete/ReadyForQuery; the connection keeps reading the statement's rows
// into the same query. packages/core/src/postgres-adapter.ts `rejectTracked` (around line 318)
// takes that first rejection as the statement's end: `ended = true`, `owner.settled(...)`, so
// packages/core/src/lease.ts `settled()` removes it from `#inflight` and the lease, no longer
// busy, releases the connection (lease.ts `#complete` -> `#release`). The adapter guards cursors
// (`cursorTracked` catches a throw and closes the portal) but not `forEachFn` nor a row handler.
//
// Suggested fix: wrap `forEachFn` as `cursorFn` is (catch the callback's throw, remember it, stop
// calling it, keep the query in flight, and reject it with the remembered error when the driver
// settles it at ReadyForQuery; a cancel for a non-pipelined lease makes that prompt). For a parser
// or transform throw, keep the query in `#inflight` until ReadyForQuery (a "failed early" state
// that `settled` honours only once the driver's final settle arrives).

const fx = noteTable()
failOnProcessErrors()

// 100 quick rows of 2 kB (several socket flushes, so the first rows arrive at once), then 10 s of
// work before the last one: the statement is still running when the request has answered.
const slowTail =
  "select i, repeat('x', 2000) as pad, case when i = 100 then pg_sleep(10) end as pause from generate_series(1, $1::int) i"

test('forEach whose callback throws: the connection is not back while the statement still runs, and the callback is not called after the reply', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app, applicationName } = fx.current
  let calls = 0
  app.get('/each', async (request) => {
    await request.db.unsafe(slowTail, [101]).forEach(() => {
      calls++
      throw new Error('bad row')
    })
    return 'never'
  })
  app.get('/next', async (request) => (await request.db`select 1 as one`)[0])

  const res = await app.inject('/each')
  expect(res.statusCode).toBe(500)
  const callsAtReply = calls

  // Once the pool says the connection is back, none of the request's statements runs on it.
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 10_000)).toBe(true)
  expect(await fx.db.running(applicationName, '%generate_series%')).toBe(0)

  // Nothing of the finished request runs: its callback is not called again.
  expect(await waitFor(async () => (await fx.db.running(applicationName, '%generate_series%')) === 0, 20_000)).toBe(
    true,
  )
  expect(calls).toBe(callsAtReply)

  // The connection serves the next request.
  expect((await app.inject('/next')).json()).toEqual({ one: 1 })
})

test('a custom type parser that throws on a row: the connection is not back while the statement still runs', async () => {
  const parsed = new URL(fx.db.url)
  const applicationName = uniqueName()
  const app = Fastify()
  fx.closers.push(() => app.close())
  await app.register(pgPoolCore, {
    connection: {
      host: parsed.hostname,
      port: Number(parsed.port),
      database: parsed.pathname.slice(1),
      user: decodeURIComponent(parsed.username),
      password: decodeURIComponent(parsed.password),
      types: {
        // numeric (1700): a strict parser that refuses one value.
        strict: {
          to: 1700,
          from: [1700],
          serialize: (x: unknown) => String(x),
          parse: (x: string) => {
            if (x === '5') throw new Error('unparseable value')
            return Number(x)
          },
        },
      },
    } as never,
    pool: { max: 1, applicationName },
  })
  app.get('/rows', async (request) => {
    await request.db.unsafe(
      "select i::numeric as n, repeat('x', 2000) as pad, case when i = 100 then pg_sleep(10) end as pause from generate_series(1, $1::int) i",
      [101],
    )
    return 'never'
  })
  await app.ready()

  const res = await app.inject('/rows')
  expect(res.statusCode).toBe(500)
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 10_000)).toBe(true)
  expect(await fx.db.running(applicationName, '%generate_series%')).toBe(0)
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { uniqueName, waitFor } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'

// DEFECT (probe-fixes-adapter, medium). What the user does: a `connection.types` parser or a
// `connection.transform` (row/value/column) throws on a row, with an error that carries a string
// `code`, as application errors commonly do (`class ValidationError { code = 'E_VALIDATION' }`,
// @fastify/error's FST_..., Node's own `new URL(x)` -> ERR_INVALID_URL, `Buffer`/`BigInt` helpers).
// What they see: the request answers 500 at once and its connection goes back to the pool
// (stats: leased 0) while the server still runs the request's statement (pg_stat_activity
// 'active'): the next request waits behind a statement of a request that is over. This is
// exactly the defect round twelve fixed (row-handler-throw-returns-running), reopened for any
// thrown error that has a `code`. What they should see (README, request.db: "A forEach callback
// (or a type parser, or a transform) that throws ... fails with what it threw once its statement
// has ended on the server, and the connection goes back only then"): the lease held until the
// statement ended.
//
// Cause: packages/core/src/postgres-adapter.ts `thrownWhileAnswered` (around line 348) tells a
// throw of the app's from postgres.js's own errors by `typeof error.code !== 'string'`: an app
// error with a string `code` is taken for postgres.js's (a lost socket, a protocol error), so
// `rejectTracked` ends the query at once (`endRejected` -> lease.ts `settled` removes it from
// `#inflight`; the lease, no longer busy, releases its connection). forEach callbacks are
// caught apart (`forEachTracked`), parsers and transforms are not.
//
// Suggested fix: identify the app's throw by where it came from, not by its shape: wrap the
// parsers and transforms the adapter installs (as `forEachFn` is wrapped: catch, remember in
// `stoppedBy`, rethrow a private marker or return a placeholder), or mark postgres.js's own
// errors (Errors.connection/generic set `code` on errors built in errors.js; compare against
// its known list: CONNECTION_*, COPY_IN_PROGRESS, UNSAFE_TRANSACTION, MAX_PARAMETERS_EXCEEDED,
// SASL_*, socket errno codes) instead of any string `code`.

const fx = noteTable()
failOnProcessErrors()

// 100 quick rows of 2 kB, then 6 s of work before the last one: the statement still runs when
// the throw on row 3 has been answered.
const slowTail =
  "select i, i::numeric as n, repeat('x', 2000) as pad, case when i = 100 then pg_sleep(6) end as pause from generate_series(1, 101) i"

const codedError = () => Object.assign(new Error('row 3 is invalid'), { code: 'E_VALIDATION' })

async function appWith(
  connectionExtra: Record<string, unknown>,
): Promise<{ app: FastifyInstance; applicationName: string }> {
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
      ...connectionExtra,
    } as never,
    pool: { max: 1, applicationName },
  })
  app.get('/rows', async (request) => {
    await request.db.unsafe(slowTail)
    return 'never'
  })
  await app.ready()
  return { app, applicationName }
}

async function expectHeldWhileRunning(app: FastifyInstance, applicationName: string): Promise<void> {
  const res = await app.inject('/rows')
  expect(res.statusCode).toBe(500)
  expect(res.json().code).toBe('E_VALIDATION')
  // Once the pool says the connection is back, none of the request's statements runs on it.
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 15_000)).toBe(true)
  expect(await fx.db.running(applicationName, '%generate_series%')).toBe(0)
}

test('a row transform throwing an error with a string code: the connection is not back while the statement runs', async () => {
  const { app, applicationName } = await appWith({
    transform: {
      row: {
        from: (row: Record<string, unknown>) => {
          if (row.i === 3) throw codedError()
          return row
        },
      },
    },
  })
  await expectHeldWhileRunning(app, applicationName)
})

test('a type parser throwing an error with a string code: the connection is not back while the statement runs', async () => {
  const { app, applicationName } = await appWith({
    types: {
      strict: {
        to: 1700,
        from: [1700],
        serialize: (x: unknown) => String(x),
        parse: (x: string) => {
          if (x === '3') throw codedError()
          return Number(x)
        },
      },
    },
  })
  await expectHeldWhileRunning(app, applicationName)
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { uniqueName } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'

// DEFECT (probe-third, high). What the user does: the app has a `connection.transform` (or a
// `connection.types` parser) that throws on some values (a validating transform), and an
// `onConnect` hook whose statement on the connection's own client meets such a value and is
// allowed to fail (`.catch(() => {})`, a best-effort setup step). Equally: any statement of the
// suite's own run on a raw client (open()'s pid, the array types, the recovery check, the
// replicas' lag samples, readServerSlots) whose row the app's transform throws on.
// What they see: the NEXT statement anywhere in the process (any request, any pool, any named
// instance) that the server fails while it runs (a unique violation, a division by zero) never
// settles: the request hangs (here: no answer within 15 s; with handlerTimeout, a 503 and a
// connection torn down), and its connection stays leased.
// What they should see: the server's error at once (400 22012 by the default mapping).
//
// Cause: packages/core/src/postgres-adapter.ts `guardAppCode` (around line 364) sets the
// module-level `appCodeThrew` whenever a guarded parser/transform throws, and only
// `rejectTracked` (line ~328) reads and clears it. A throw during a query that is not a
// TrackedQuery (onConnect's `client.sql`, `open()`'s `sql\`select pg_backend_pid()\``, the
// ARRAY_TYPES_SQL / IN_RECOVERY_SQL / lag-sample queries) is rejected by postgres.js's plain
// Query: the flag stays set. The next rejectTracked on an active query (a server error at
// ReadyForQuery) takes the server's error for an app throw (`stoppedBy ??= error; return`) and
// waits for an end that already happened: nothing settles it again.
//
// Suggested fix: do not keep the flag across queries: mark the thrown error itself (a WeakSet of
// app-thrown objects, primitives wrapped) and test `error` in rejectTracked, or clear the flag
// in every reject path (wrap `queryError`), or guard only per-query (set the flag on the query
// postgres.js is reading: record `this`-less throws with the current TrackedQuery).

const fx = noteTable()
failOnProcessErrors()

async function appWith(poison: boolean): Promise<FastifyInstance> {
  const parsed = new URL(fx.db.url)
  const app = Fastify()
  fx.closers.push(() => app.close())
  await app.register(pgPoolCore, {
    connection: {
      host: parsed.hostname,
      port: Number(parsed.port),
      database: parsed.pathname.slice(1),
      user: decodeURIComponent(parsed.username),
      password: decodeURIComponent(parsed.password),
      transform: {
        value: {
          from: (value: unknown) => {
            if (value === 'poison') throw new Error('poisoned value')
            return value
          },
        },
      },
    } as never,
    // A best-effort step of the app's: it may fail.
    onConnect: async (sql) => {
      await sql`select ${poison ? 'poison' : 'fine'}::text as setting`.catch(() => undefined)
    },
    pool: { max: 1, applicationName: uniqueName() },
  })
  app.get('/fails', async (request) => {
    await request.db`select 1 / 0 as never`
    return 'never'
  })
  app.get('/ok', async (request) => (await request.db`select 42 as n`)[0])
  await app.ready()
  return app
}

const within = <T>(promise: Promise<T>, ms: number): Promise<T | 'no answer'> =>
  Promise.race([promise, new Promise<'no answer'>((resolve) => setTimeout(() => resolve('no answer'), ms))])

test('after a transform threw on onConnect’s own statement, a server error still fails its request at once', async () => {
  const app = await appWith(true)
  // The connection opens (onConnect's statement failed and was caught).
  expect((await app.inject('/ok')).json()).toEqual({ n: 42 })
  const res = await within(app.inject('/fails'), 15_000)
  expect(res === 'no answer' ? res : { status: res.statusCode, code: res.json().code }).toEqual({
    status: 400,
    code: '22012',
  })
}, 30_000)

test('(control) the same app whose onConnect statement did not throw: the server error answers at once', async () => {
  const app = await appWith(false)
  expect((await app.inject('/ok')).json()).toEqual({ n: 42 })
  const res = await within(app.inject('/fails'), 15_000)
  expect(res === 'no answer' ? res : { status: res.statusCode, code: res.json().code }).toEqual({
    status: 400,
    code: '22012',
  })
}, 30_000)

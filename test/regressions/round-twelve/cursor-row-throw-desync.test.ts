import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { uniqueName } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'

// DEFECT (probe-fixes-adapter, high). What the user does: reads a query with `.cursor(n, fn)` or
// `for await (const rows of request.db\`...\`.cursor(n))`, and a `connection.types` parser or a
// `connection.transform` throws on one row of a batch (a strict parser, a validating transform).
// What they see: (1) the cursor's callback / loop is handed that batch with the failed row
// silently missing (rows 1,2,4..10 of 1..10), and only afterwards does the query fail: code that
// writes each batch out (an export, a streamed reply) has written an incomplete batch; (2) the
// connection is left out of step with the server: a LATER request, that did nothing wrong, on
// that connection hangs and fails with 503 FST_PG_POOL_QUERY_TIMEOUT after statementTimeout + 1 s
// (30 s by default; the backend sits 'idle' in ClientRead), or its connection is replaced. What
// they should see: the cursor fails with what was thrown, its callback not called with a batch
// the throw broke (the README: the throwing code "is not called again" / "nothing runs on behalf
// of a finished request"), and the next request served normally.
//
// Cause: on a throw while a DataRow is read, postgres.js (connection.js `data()`) writes a Sync
// (the query has a cursorFn) and rejects the query; round twelve defers that rejection
// (packages/core/src/postgres-adapter.ts `rejectTracked`: `stoppedBy` set, the query still in
// flight). The batch's PortalSuspended then calls `cursorFn` -> `cursorTracked` (around line
// 410), which hands the broken batch to the app's callback and returns its result, so
// postgres.js writes `Execute('', n)` + Flush (or Close + Sync) BEHIND its own Sync. The server
// answers the Sync (ReadyForQuery: the query settles, the lease goes back) and then fails the
// Execute on the portal that Sync closed, skipping every message until the next Sync: the
// session reset's simple Query is swallowed, or the next statement gets the error/answer meant
// for the cursor.
//
// Suggested fix: in `cursorTracked`, when `this.stoppedBy !== undefined` (a row of this batch
// failed: postgres.js has written its Sync already), do not call the callback and return a
// promise that never settles, so that postgres.js writes nothing more for the portal; the query
// then ends with `stoppedBy` at that Sync's ReadyForQuery (resolveTracked).

const fx = noteTable()
failOnProcessErrors()

async function appWith(): Promise<FastifyInstance> {
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
            if (value === 3) throw new Error('value 3 is invalid')
            return value
          },
        },
      },
    } as never,
    pool: { max: 1, applicationName: uniqueName(), statementTimeout: 3000 },
  })
  const read = (rows: readonly Record<string, unknown>[]) => rows.map((row) => row.i)
  app.get('/cursor', async (request) => {
    const seen: unknown[][] = []
    try {
      await request.db.unsafe('select i from generate_series(1, 50) i').cursor(10, (rows) => {
        seen.push(read(rows))
      })
      return { failed: undefined, seen }
    } catch (error) {
      return { failed: (error as Error).message, seen }
    }
  })
  app.get('/iterate', async (request) => {
    const seen: unknown[][] = []
    try {
      for await (const rows of request.db.unsafe('select i from generate_series(1, 50) i').cursor(10)) {
        seen.push(read(rows))
      }
      return { failed: undefined, seen }
    } catch (error) {
      return { failed: (error as Error).message, seen }
    }
  })
  app.get('/next', async (request) => (await request.db`select 42 as n`)[0])
  await app.ready()
  return app
}

for (const url of ['/cursor', '/iterate'] as const) {
  test(`${url}: a batch in which a row failed is not handed to the app`, async () => {
    const app = await appWith()
    const res = await app.inject(url)
    expect(res.json().failed).toBe('value 3 is invalid')
    // No batch with a row silently missing.
    expect(res.json().seen).toEqual([])
  })

  test(`${url}: after a row failed in a cursor, the next requests on the connection are served`, async () => {
    const app = await appWith()
    for (let round = 0; round < 12; round++) {
      expect((await app.inject(url)).json().failed).toBe('value 3 is invalid')
      const next = await app.inject('/next')
      expect({ round, status: next.statusCode, body: next.json() }).toEqual({ round, status: 200, body: { n: 42 } })
    }
  }, 60_000)
}

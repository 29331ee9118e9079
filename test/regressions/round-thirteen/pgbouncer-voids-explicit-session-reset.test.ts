// DEFECT (probe-options, low). What the user does: gives `pool: { pgbouncer: true, sessionReset:
// 'always' }` (they want each request's session state reset, and believe their PgBouncer, or a
// pooler they set this flag for, keeps the server session per client). What they see: register
// accepts both; `sessionReset` is silently replaced by 'never': a `SET` one request makes (here
// `statement_timeout`, `search_path`) is what the next request on the same connection runs
// with. What they should see: FST_PG_POOL_INVALID_OPTION naming pool.sessionReset (PgBouncer's
// transaction mode cannot reset a session the pool does not own), as the suite refuses its other
// contradictions with pgbouncer (`leaseApplicationName`, `otel.traceContext`); or the reset they
// asked for. Cause: packages/core/src/lease.ts:1341 `this.#ctx.options.pgbouncer ? 'never' :
// this.#ctx.options.sessionReset`, with no check in resolvePoolOptions (packages/core/src/
// options.ts) that sessionReset was given. Suggested fix: refuse an explicit sessionReset other
// than 'never' with pgbouncer: true (`pool.sessionReset: PgBouncer in transaction mode hands the
// server session to other clients; it cannot be reset per request`).
// Round thirteen: failed on a718e61 (the code before its fix, both servers); passes after it.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db?.drop())

test("pgbouncer: true with an explicit sessionReset: 'always'", async () => {
  const app = Fastify()
  try {
    const registered = await app
      .register(pgPoolCore, { connection: db.directUrl, pool: { max: 1, pgbouncer: true, sessionReset: 'always' } })
      .then(
        () => true,
        (error: unknown) => error,
      )
    if (registered !== true) {
      return expect(registered).toMatchObject({
        code: 'FST_PG_POOL_INVALID_OPTION',
        message: expect.stringContaining('sessionReset'),
      })
    }
    app.post('/set', async (request) => {
      await request.db`set statement_timeout = '4321ms'`
      return { ok: true }
    })
    app.get('/read', async (request) => (await request.db`select current_setting('statement_timeout') as s`)[0])
    await app.ready()
    const before = (await app.inject('/read')).json()
    expect((await app.inject({ method: 'POST', url: '/set' })).statusCode).toBe(200)
    // Fails: { s: '4321ms' }: the previous request's SET, on the same connection, not reset.
    expect((await app.inject('/read')).json()).toEqual(before)
  } finally {
    await app.close()
  }
})

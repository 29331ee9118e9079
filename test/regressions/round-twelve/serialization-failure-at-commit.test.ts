// DEFECT (probe-tx-edges, round 12): a serialization failure (40001) raised at the COMMIT of a
// `request.db.begin()` block loses its SQLSTATE and its retryability.
//
// What the user does: the pattern PostgreSQL's documentation asks of every SERIALIZABLE user
// ("applications using this level must be prepared to retry transactions due to serialization
// failures"), with the README's `request.db.begin()` ("the postgres.js query API ... begin()")
// and its `DatabaseError` whose `code` is the SQLSTATE:
//   for (;;) try { return await request.db.begin('isolation level serializable', fn) }
//            catch (e) { if (e.code === '40001') continue; throw e }
// SSI reports most write-skew conflicts at COMMIT ("Canceled on identification as a pivot, during
// commit attempt"), built here deterministically with a second session.
// What they see: begin() rejects with FST_PG_POOL_COMMIT_FAILED (code not '40001'; the SQLSTATE
// only in the message text and a non-enumerable `cause`), so the retry loop never retries; left
// unhandled, the client gets a 500 without Retry-After, where the same 40001 raised one statement
// earlier gives the README's "40001 serialization failure ... 503 with Retry-After" (error table).
// What they should see: the block's rejection says 40001 (postgres.js's own begin() rejects with
// the server's 40001 there), and the reply is a 503 with Retry-After.
// Cause: packages/core/src/commit-outcome.ts commitFailure (l.26-30): every server error at COMMIT
// becomes FST_PG_POOL_COMMIT_FAILED (500, not in errors.ts retryableCodes), whatever its class;
// lease.ts transaction() (l.~1330) throws that. (The route transaction's COMMIT takes the same
// path; its README section documents the 500, which contradicts the error table for 40001/40P01.)
// Suggested fix: for a COMMIT the server refused with class 40 (40001, 40P01: retryable by
// definition), reject with the mapped DatabaseError (code '40001', statusCode 503, Retry-After),
// or give COMMIT_FAILED the cause's status and headers and its SQLSTATE in a field.
import type { RequestDb } from '@fastify-pg-pool/core'
import { expect, test } from 'vitest'
import { deferred } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { noteTable } from '../../support/note-table.js'

const fx = noteTable()

/**
 * Write skew: the app's block reads group 1 and writes group 2; another serializable session
 * reads group 2, writes group 1 and commits first. Only on the first attempt.
 */
async function setup() {
  await fx.db.sql`create table if not exists duty (g int, who text)`
  await fx.db.sql`truncate duty`
  fx.current = await coreApp(fx.db.directUrl, { max: 2, statementTimeout: 10_000 })
  const { app } = fx.current
  const otherRead = deferred()
  const appWrote = deferred()
  const otherCommitted = deferred()
  let attempts = 0
  const block = (db: RequestDb) =>
    db.begin('isolation level serializable', async (tx) => {
      attempts++
      await tx`select count(*) from duty where g = 1`
      if (attempts === 1) await otherRead.promise
      await tx`insert into duty values (2, 'app')`
      if (attempts === 1) {
        appWrote.resolve()
        await otherCommitted.promise
      }
    })
  const other = async () => {
    await fx.db.sql.begin('isolation level serializable', async (tx) => {
      await tx`select count(*) from duty where g = 2`
      otherRead.resolve()
      await appWrote.promise
      await tx`insert into duty values (1, 'other')`
    })
    otherCommitted.resolve()
  }
  return { app, block, other, attempts: () => attempts }
}

const rows = async () => (await fx.db.sql<{ who: string }[]>`select who from duty order by who`).map((r) => r.who)

test('a retry loop on 40001 retries a serialization failure raised at the COMMIT of begin()', async () => {
  const { app, block, other, attempts } = await setup()
  app.post('/retry', async (request) => {
    for (let attempt = 1; ; attempt++) {
      try {
        await block(request.db)
        return { attempts: attempt }
      } catch (error) {
        if ((error as { code?: unknown }).code === '40001' && attempt < 3) continue
        throw error
      }
    }
  })
  await app.ready()
  const pending = app.inject({ method: 'POST', url: '/retry' })
  await other()
  const res = await pending
  expect({ status: res.statusCode, body: res.json(), attempts: attempts() }).toEqual({
    status: 200,
    body: { attempts: 2 },
    attempts: 2,
  })
  expect(await rows()).toEqual(['app', 'other'])
})

test('unhandled, a 40001 at the COMMIT of begin() is a 503 with Retry-After, like a 40001 at a statement', async () => {
  const { app, block, other } = await setup()
  app.post('/once', async (request) => {
    await block(request.db)
    return { ok: true }
  })
  await app.ready()
  const pending = app.inject({ method: 'POST', url: '/once' })
  await other()
  const res = await pending
  expect(await rows()).toEqual(['other'])
  expect({ status: res.statusCode, retryAfter: res.headers['retry-after'] }).toEqual({
    status: 503,
    retryAfter: '1',
  })
})

import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { waitFor } from '../../../support/database.js'
import { transactionFixture } from '../../../support/transaction-fixture.js'

// DEFECT (probe-transactions, round sixteen): a 500 that says "rolled back" over work that was
// committed.
// What the user does, on a route without a route transaction, with code moved over from pg
// (`client.query('BEGIN')`): opens a block in SQL, writes, replies, and commits after the reply
// (`reply.send(result); await request.db\`commit\``, or a COMMIT not awaited).
// What they saw: 500 FST_PG_POOL_COMMIT_FAILED "a transaction block the handler opened in SQL was
// still open when it replied; it was rolled back", and the row IS in the database: the pool asked
// the session whether a block was open (it was, and had written), and the handler's COMMIT, sent
// right behind that question, ran before the pool ended the lease. A client that retries on the
// 500 writes it twice.
// What they should see: the README's promise for that block: rolled back, the 500, nothing
// committed. Once the reply is decided, nothing new runs for the request (the README: "From then
// on request.db refuses every query with FST_PG_POOL_RELEASED").
// Cause: packages/core/src/lease.ts leftBlockOpen() sent its question and left the holder's
// statements running until its answer came back and onSend ended the lease (fixed in f49a705:
// the holder's statements are refused from the question on).

const fx = transactionFixture()
failOnProcessErrors()

test('a COMMIT sent right after the reply, behind the pool asking about the block: refused, nothing committed', async () => {
  const { app } = fx.current
  const out: string[] = []
  app.post('/moved-from-pg', async (request, reply) => {
    await request.db`begin`
    await request.db`insert into note values ('sql-block')`
    reply.send({ ok: true })
    await request.db`commit`.then(
      () => out.push('commit ran'),
      (error: { code?: string }) => out.push(`commit ${error.code}`),
    )
    return reply
  })
  const res = await app.inject({ method: 'POST', url: '/moved-from-pg' })
  expect(await waitFor(() => out.length === 1)).toBe(true)
  // Before the fix: { status: 500, code: 'FST_PG_POOL_COMMIT_FAILED', notes: ['sql-block'] }, out ['commit ran'].
  expect({ status: res.statusCode, code: res.json().code, notes: await fx.notes() }).toEqual({
    status: 500,
    code: 'FST_PG_POOL_COMMIT_FAILED',
    notes: [],
  })
  expect(out).toEqual(['commit FST_PG_POOL_RELEASED'])
})

import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { waitFor } from '../../../support/database.js'
import { transactionFixture, tx } from '../../../support/transaction-fixture.js'

// DEFECT (probe-transactions, round sixteen): on a route transaction, a handler that writes its
// response on `reply.raw` (after `reply.hijack()`) and waits for each write's callback, as
// streaming code does (`await new Promise((resolve, reject) => reply.raw.write(chunk, (e) => e ?
// reject(e) : resolve()))`, `reply.raw.end(body, done)`), never resumes when the COMMIT fails (a
// deferred constraint): the client gets the README's 500 FST_PG_POOL_COMMIT_FAILED, but the
// callbacks of the writes the gate held for the COMMIT, and of every write after, are never
// called. The handler hangs forever with its request, reply and whatever it holds (a file handle,
// a lock of its own, a counter it decrements after the loop): one more per failed COMMIT.
// Node calls such a callback in every case (with ERR_STREAM_WRITE_AFTER_END / _DESTROYED when the
// write cannot go out); so should the gate, with the error the COMMIT failed with.
// Cause: packages/core/src/reply-gate.ts Gate: #fail() drops the held writes (their callbacks with
// them), and write() in the 'failed' (and 'dropped') state returns without calling the callback.

const fx = transactionFixture({ deferred: true })
failOnProcessErrors()

/** Resolves with the error the write's callback got ('ok' when none), or never. */
function written(write: (callback: (error?: Error | null) => void) => void): Promise<string> {
  return new Promise((resolve) =>
    write((error) => resolve(error ? ((error as { code?: string }).code ?? error.message) : 'ok')),
  )
}

test('the COMMIT fails: the callbacks of held and later raw writes are called, the handler ends', async () => {
  const { app } = fx.current
  const out: string[] = []
  app.post('/export/:bad', tx, async (request, reply) => {
    await request.db`insert into note values ('export')`
    if ((request.params as { bad: string }).bad === '1') await request.db`insert into child values (1, 999)`
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    out.push(`held write: ${await written((done) => reply.raw.write('a', done))}`)
    // The COMMIT has been answered by now: a write after it.
    out.push(`later write: ${await written((done) => reply.raw.write('b', 'utf8', done))}`)
    out.push(`end: ${await written((done) => reply.raw.end('c', done))}`)
  })

  const ok = await app.inject({ method: 'POST', url: '/export/0' })
  expect({ status: ok.statusCode, body: ok.body, notes: await fx.notes() }).toEqual({
    status: 200,
    body: 'abc',
    notes: ['export'],
  })
  expect(await waitFor(() => out.length === 3)).toBe(true)
  expect(out.splice(0)).toEqual(['held write: ok', 'later write: ok', 'end: ok'])
  await fx.db.sql`truncate note`

  const failed = await app.inject({ method: 'POST', url: '/export/1' })
  expect({ status: failed.statusCode, code: failed.json().code, notes: await fx.notes() }).toEqual({
    status: 500,
    code: 'FST_PG_POOL_COMMIT_FAILED',
    notes: [],
  })
  // Before the fix: out stays [] (the handler waits on its first write's callback forever).
  expect(await waitFor(() => out.length === 3, 3_000)).toBe(true)
  expect(out).toEqual([
    'held write: FST_PG_POOL_COMMIT_FAILED',
    'later write: FST_PG_POOL_COMMIT_FAILED',
    'end: FST_PG_POOL_COMMIT_FAILED',
  ])
  // The lease is back.
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
})

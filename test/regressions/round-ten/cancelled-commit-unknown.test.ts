// What the user does: a route transaction whose COMMIT takes a while (a deferred constraint
// trigger: 1 s here; synchronous replication or a big deferred check do the same) is running its
// COMMIT when the pool ends the request: app.close() past closeTimeout, or the route's
// handlerTimeout (the handler returned in time; the COMMIT made it late). The pool cancels the
// COMMIT; the server answers it with 57014 and rolls the transaction back.
// What they should get: the server said the COMMIT failed, so the outcome is known: nothing
// committed, a 503 that says so (FST_PG_POOL_CLOSED / FST_PG_POOL_ABORTED with Retry-After, as
// "If the pool ends the transaction ... 503 FST_PG_POOL_CLOSED with Retry-After" in the core
// README), counted `rollback` (or `commit_failed`). FST_PG_POOL_COMMIT_UNKNOWN is for "COMMIT
// was sent and no answer came".
// What they get: 503 FST_PG_POOL_COMMIT_UNKNOWN "COMMIT was sent and no answer came
// (FST_PG_POOL_CLOSED): the transaction may have been committed", counted `commit_unknown`: the
// client is told to treat a rolled-back request as in doubt (the idempotency-key dance). On the
// handlerTimeout path the 503 also lacks the Retry-After the README promises (for COMMIT_UNKNOWN,
// and for ABORTED/CLOSED): Fastify's error handler already ran for its own timeout reply (the one
// the core dropped as a second send), so the core's error goes through Fastify's fallback error
// handler, which writes the status and body but not the error's `headers`. A fix of the code alone
// leaves that: the core should set Retry-After on the reply itself (reply.header) before handing
// the error on, as the gate's failureBody does for raw replies.
// Cause: lease.ts surfaces the COMMIT's 57014 after an abort as FST_PG_POOL_ABORTED/_CLOSED
// (error-mapping.ts l.255-258, the server's error kept only as `cause`); #commit's catch hands that
// to commitFailure (commit-outcome.ts), which sees no `severity` and calls it "no answer".
// (When the machine is too slow for the cancel to land within the pool's 50 ms grace, the
// connection is cut, the server commits, and COMMIT_UNKNOWN is right: the tests accept that case.)
import { request as httpRequest } from 'node:http'
import { beforeAll, expect, test } from 'vitest'
import { coreApp } from '../../support/app.js'
import { sleep, waitFor } from '../../support/database.js'
import { listen } from '../../support/http.js'
import { noteTable } from '../../support/note-table.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const

beforeAll(async () => {
  await fx.db.sql.unsafe(
    `create function slow_commit() returns trigger language plpgsql as $$ begin perform pg_sleep(1); return null; end $$`,
  )
  await fx.db.sql.unsafe('create table slow (x int)')
  await fx.db.sql.unsafe(
    `create constraint trigger slow_commit after insert on slow deferrable initially deferred
     for each row execute function slow_commit()`,
  )
})

/** A POST on a socket of its own (Connection: close: app.close() waits for no keep-alive socket). */
function post(url: string): Promise<{ status: number; retryAfter: string | undefined; code: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        text += chunk
      })
      res.on('end', () => {
        let code: string | undefined
        try {
          code = (JSON.parse(text) as { code?: string }).code
        } catch {}
        const retryAfter = res.headers['retry-after']
        resolve({
          status: res.statusCode ?? 0,
          retryAfter: typeof retryAfter === 'string' ? retryAfter : undefined,
          code,
        })
      })
    })
    req.on('error', reject)
    req.end()
  })
}

test('app.close() past closeTimeout cancels a running COMMIT: a known rollback (503 CLOSED, Retry-After), not COMMIT_UNKNOWN', async () => {
  fx.current = await coreApp(fx.db.url, { max: 2, closeTimeout: 200 })
  const { app, applicationName } = fx.current
  const outcomes: string[] = []
  app.pgPool.on('transaction', (outcome: string) => void outcomes.push(outcome))
  app.post('/t', tx, async (request) => {
    await request.db`insert into note values ('x')`
    await request.db`insert into slow values (1)`
    return { ok: true }
  })
  const base = await listen(app)
  const pending = post(`${base}/t`)
  expect(await waitFor(async () => (await fx.db.running(applicationName, 'COMMIT%')) === 1, 5_000)).toBe(true)
  const closing = app.close()
  const answer = await pending
  await closing
  fx.current = undefined
  const committed = (await fx.notes()).length > 0
  if (committed) {
    // The cancel missed the grace on a slow machine: the connection was cut and the server committed.
    expect(answer.code).toBe('FST_PG_POOL_COMMIT_UNKNOWN')
    return
  }
  expect({ answer, outcomes }).toEqual({
    answer: { status: 503, retryAfter: expect.any(String), code: 'FST_PG_POOL_CLOSED' },
    outcomes: [expect.stringMatching(/^(rollback|commit_failed)$/)],
  })
})

test('handlerTimeout while the COMMIT runs: a known rollback (Fastify answers the client itself), not COMMIT_UNKNOWN', async () => {
  fx.current = await coreApp(fx.db.url, { max: 2 })
  const { app } = fx.current
  const outcomes: string[] = []
  app.pgPool.on('transaction', (outcome: string) => void outcomes.push(outcome))
  app.post('/t', { ...tx, handlerTimeout: 300 }, async (request) => {
    await request.db`insert into note values ('x')`
    await request.db`insert into slow values (1)`
    return { ok: true }
  })
  const base = await listen(app)
  const answer = await post(`${base}/t`)
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
  await sleep(100)
  const committed = (await fx.notes()).length > 0
  if (committed) {
    expect(answer.code).toBe('FST_PG_POOL_COMMIT_UNKNOWN')
    return
  }
  expect({
    status: answer.status,
    unknown: answer.code === 'FST_PG_POOL_COMMIT_UNKNOWN',
    outcomes,
  }).toEqual({
    status: 503,
    unknown: false,
    outcomes: [expect.stringMatching(/^(rollback|commit_failed)$/)],
  })
})

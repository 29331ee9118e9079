// DEFECT (probe-tx-edges, round 12): with read-your-writes on, a route transaction that COMMITTED
// is answered as not committed when the pool's read of the WAL position after it fails.
//
// What the user does: an instance with replicas and `replica.readYourWrites` (so the pool sends
// `COMMIT; SELECT pg_current_wal_insert_lsn()` as one simple-protocol message to end a route
// transaction and learn the token). That SELECT runs in a new implicit transaction after the
// COMMIT, with the session's defaults: here the handler (or, the same, a DBA's
// `ALTER ROLE/DATABASE ... SET default_transaction_isolation = serializable,
// default_transaction_read_only = on, default_transaction_deferrable = on` with the write route on
// `transaction: { readOnly: false }`) made them SERIALIZABLE READ ONLY DEFERRABLE, so it waits for
// a safe snapshot while any serializable read-write transaction is open elsewhere. While it waits:
//   1. a DBA's pg_cancel_backend (or any cancel) ends the SELECT with 57014;
//   2. app.close() runs past closeTimeout: the pool's own cancel ends it with 57014.
// What they see: (1) 500 FST_PG_POOL_COMMIT_FAILED "The transaction was not committed (57014)",
// outcome `commit_failed`; (2) 503 FST_PG_POOL_CLOSED ("the transaction rolls back", README),
// outcome `rollback`. In both cases the row IS committed: the client retries and does the work
// twice, or reports a failure for a success.
// What they should see: the handler's 200 (the COMMIT was answered COMMIT; only the token read
// failed, so the reply goes without a token), outcome `commit`.
// Cause: packages/core/src/lease.ts #commit (l.~1257): the COMMIT and the LSN read are one query
// (`COMMIT; ${CURRENT_LSN_SQL}`); postgres.js rejects the whole message when its second statement
// fails, and the catch hands that error to commitFailure (commit-outcome.ts), which reads a server
// error with a `severity` as "the server refused the COMMIT" (commit_failed) and an abort-cancelled
// one as a known rollback (the round-ten fix, commit-outcome.ts l.17-24). Neither is about the COMMIT.
// Suggested fix: send the LSN read as a second query pipelined behind the COMMIT (no extra round
// trip) and judge the outcome by the COMMIT's own answer; a failed read only loses the token
// (as #captureThenRelease already does for autocommitted writes).
import { request as httpRequest } from 'node:http'
import { expect, test } from 'vitest'
import { deferred } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { waitFor } from '../../support/database.js'
import { listen } from '../../support/http.js'
import { noteTable } from '../../support/note-table.js'

const fx = noteTable()

async function rywApp(closeTimeout = 10_000) {
  fx.current = await coreApp(
    fx.db.directUrl,
    { max: 1, statementTimeout: 10_000, closeTimeout },
    {},
    {
      // The replica is the primary itself: read-your-writes only needs the option to capture.
      replicas: [fx.db.directUrl],
      replica: { readYourWrites: { secret: 'a-test-secret-of-some-length' } },
    },
  )
  const { app, applicationName } = fx.current
  const outcomes: string[] = []
  app.pgPool.on('transaction', (outcome: string) => void outcomes.push(outcome))
  app.post('/w', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into note values ('committed')`
    // The session's defaults for the transactions after this one (a DBA's ALTER ROLE ... SET does the same).
    await request.db`set session characteristics as transaction isolation level serializable, read only, deferrable`
    return { ok: true }
  })
  app.get('/next', async (request) => (await request.db`select txid_current_if_assigned() as xid`)[0])
  return { app, applicationName, outcomes }
}

/** A serializable read-write transaction of another session, open until released. */
async function openSerializableWriter() {
  const opened = deferred()
  const release = deferred()
  const writer = fx.db.sql.begin('isolation level serializable', async (tx) => {
    await tx`select count(*) from note`
    await tx`create temp table if not exists scratch (x int)`
    await tx`insert into scratch values (1)`
    opened.resolve()
    await release.promise
  })
  await opened.promise
  return async () => {
    release.resolve()
    await writer
  }
}

const waitingForSafeSnapshot = (applicationName: string) =>
  waitFor(async () => {
    const rows = await fx.db.admin<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where application_name = ${applicationName} and wait_event = 'SafeSnapshot'`
    return rows[0]?.n === 1
  }, 10_000)

function post(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

test('a cancel of the LSN read after a successful COMMIT: the committed work is answered 200, not COMMIT_FAILED', async () => {
  const { app, applicationName, outcomes } = await rywApp()
  await app.ready()
  const releaseWriter = await openSerializableWriter()
  try {
    const pending = app.inject({ method: 'POST', url: '/w' })
    expect(await waitingForSafeSnapshot(applicationName)).toBe(true)
    await fx.db.admin`
      select pg_cancel_backend(pid) from pg_stat_activity
      where application_name = ${applicationName} and wait_event = 'SafeSnapshot'`
    const res = await pending
    // The COMMIT was answered COMMIT: the row is there.
    expect(await fx.notes()).toEqual(['committed'])
    expect({ status: res.statusCode, body: res.json(), outcomes }).toEqual({
      status: 200,
      body: { ok: true },
      outcomes: ['commit'],
    })
  } finally {
    await releaseWriter()
  }
  // The connection (max: 1) serves the next request, outside any transaction.
  const next = await app.inject({ method: 'GET', url: '/next' })
  expect(next.statusCode, next.body).toBe(200)
  expect(next.json()).toEqual({ xid: null })
})

test('app.close() past closeTimeout while the LSN read after a successful COMMIT waits: not a 503 CLOSED "rolled back"', async () => {
  const { app, applicationName, outcomes } = await rywApp(300)
  const base = await listen(app)
  const releaseWriter = await openSerializableWriter()
  try {
    const pending = post(`${base}/w`)
    expect(await waitingForSafeSnapshot(applicationName)).toBe(true)
    const closing = app.close()
    const answer = await pending
    await closing
    fx.current = undefined
    expect(await fx.notes()).toEqual(['committed'])
    // Committed: the client must not be told the request ended before its work finished
    // (FST_PG_POOL_CLOSED, which it would retry), nor the metrics `rollback`.
    expect({ status: answer.status, body: answer.body, outcomes }).toEqual({
      status: 200,
      body: JSON.stringify({ ok: true }),
      outcomes: ['commit'],
    })
  } finally {
    await releaseWriter()
  }
})

// HELD (probe-fixes-commit, round 12): with read-your-writes, the position read written behind the
// COMMIT (and, outside a transaction, before the release) can wait: here the handler left the session
// SERIALIZABLE READ ONLY DEFERRABLE, so it waits for a safe snapshot while another session's
// serializable writer stays open, with statementTimeout 0. Fastify's handlerTimeout then ends the
// wait: the committed work is answered 200 (outcome `commit`, no token), the row is there, and the
// connection (max: 1) serves the next request. (Without handlerTimeout and with statementTimeout 0
// the reply waits for the other session's transaction: see the report.)
import { expect, test } from 'vitest'
import { deferred } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { waitFor } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'

const fx = noteTable()

async function rywApp(transaction: boolean) {
  fx.current = await coreApp(
    fx.db.directUrl,
    { max: 1, statementTimeout: 0 },
    { handlerTimeout: 1_000 },
    {
      replicas: [fx.db.directUrl],
      replica: { readYourWrites: { secret: 'a-test-secret-of-some-length' } },
    },
  )
  const { app, applicationName } = fx.current
  const outcomes: string[] = []
  app.pgPool.on('transaction', (outcome: string) => void outcomes.push(outcome))
  app.post('/w', { config: { db: { transaction } } }, async (request) => {
    await request.db`insert into note values ('committed')`
    await request.db`set session characteristics as transaction isolation level serializable, read only, deferrable`
    return { ok: true }
  })
  app.get('/next', async (request) => (await request.db`select txid_current_if_assigned() as xid`)[0])
  return { app, applicationName, outcomes }
}

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

for (const transaction of [true, false]) {
  test(`handlerTimeout while the token read waits (transaction: ${transaction})`, async () => {
    const { app, applicationName, outcomes } = await rywApp(transaction)
    await app.ready()
    const releaseWriter = await openSerializableWriter()
    try {
      const pending = app.inject({ method: 'POST', url: '/w' })
      expect(await waitingForSafeSnapshot(applicationName)).toBe(true)
      const res = await pending
      expect(await fx.notes()).toEqual(['committed'])
      expect({ status: res.statusCode, body: res.json() }).toEqual({ status: 200, body: { ok: true } })
      if (transaction) expect(outcomes).toEqual(['commit'])
    } finally {
      await releaseWriter()
    }
    const next = await app.inject({ method: 'GET', url: '/next' })
    expect({ status: next.statusCode, body: next.json() }).toEqual({ status: 200, body: { xid: null } })
  })
}

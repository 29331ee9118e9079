import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp } from '../../../support/app.js'
import { sleep, waitFor } from '../../../support/database.js'
import { noteTable } from '../../../support/note-table.js'

// DEFECT (probe-third-api): dbf59f8 refuses a late statement on a begin() block's handle once its
// callback has settled (#blockSettled), but not on a savepoint()'s handle. A savepoint callback that
// throws is answered by ROLLBACK TO SAVEPOINT; a statement sent on the savepoint's handle after the
// callback threw and before that ROLLBACK TO was answered (a branch left running, a Promise.race
// loser) is still taken as the savepoint's (its entry stays in #savepoints until the step's answer):
// it is queued behind the ROLLBACK TO, runs in the enclosing transaction, and is COMMITTED with it.
// savepoint() rejected (README: it "rolls back alone when its callback throws"), the reply is a 200,
// and a write of the rolled-back savepoint is in the database.
// Expected: once the savepoint's callback has settled, its handle's statements are refused.
//
// Deterministic: the savepoint's first statement waits for an advisory lock the test holds, so the
// ROLLBACK TO is queued behind it while the late statement is sent; the lock is freed only after.

const fx = noteTable()
failOnProcessErrors()

const LOCK = 7_140_301

type Handle = (strings: TemplateStringsArray, ...values: unknown[]) => Promise<unknown>
type Savepoint = (callback: (sp: Handle) => Promise<unknown>) => Promise<unknown>

async function lockWaiters(): Promise<number> {
  const rows = await fx.db.sql<{ n: number }[]>`
    select count(*)::int as n from pg_stat_activity
    where wait_event_type = 'Lock' and query like '%pg_advisory_lock%' and pid <> pg_backend_pid()`
  return rows[0]?.n ?? 0
}

/** A savepoint whose callback throws while its first statement waits; then a late insert on its handle. */
async function lateInSavepoint(savepoint: Savepoint, unlock: () => Promise<unknown>) {
  let handle: Handle | undefined
  let thrown = () => {}
  const threw = new Promise<void>((resolve) => {
    thrown = resolve
  })
  const inner = savepoint(async (sp) => {
    handle = sp
    sp`select pg_advisory_lock(${LOCK})`.catch(() => {})
    await waitFor(async () => (await lockWaiters()) === 1)
    thrown()
    throw new Error('the nested work fails')
  }).then(
    () => 'kept',
    (error: Error) => error.message,
  )
  await threw
  // Past the microtasks that send the ROLLBACK TO SAVEPOINT (queued behind the waiting statement).
  await sleep(50)
  const late = (handle as Handle)`insert into note values ('late')`.then(
    () => 'ran',
    (error: { code?: string }) => error.code ?? 'error',
  )
  await sleep(50)
  await unlock()
  return { inner: await inner, late: await late }
}

async function withLock<T>(run: (unlock: () => Promise<unknown>) => Promise<T>): Promise<T> {
  const holder = await fx.db.sql.reserve()
  try {
    await holder`select pg_advisory_lock(${LOCK})`
    return await run(() => holder`select pg_advisory_unlock(${LOCK})`)
  } finally {
    holder.release()
  }
}

test('route transaction: a statement of a failed savepoint sent behind its ROLLBACK TO is not committed', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  let unlock: () => Promise<unknown> = async () => {}
  app.post('/sp', { config: { db: { transaction: true } } }, async (request) =>
    lateInSavepoint(
      (cb) => request.db.savepoint(cb as never),
      () => unlock(),
    ),
  )
  await withLock(async (free) => {
    unlock = free
    const res = await app.inject({ method: 'POST', url: '/sp' })
    expect(res.statusCode).toBe(200)
    const outcome = res.json() as { inner: string; late: string }
    expect(outcome.inner).toBe('the nested work fails')
    expect(await fx.notes(), 'a row of the rolled-back savepoint, committed with a 200').toEqual([])
    expect(outcome.late).not.toBe('ran')
  })
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
}, 60_000)

test('request.db.begin(): a statement of a failed savepoint sent behind its ROLLBACK TO is not committed', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  let unlock: () => Promise<unknown> = async () => {}
  app.post('/b', async (request) =>
    request.db.begin(async (tx) =>
      lateInSavepoint(
        (cb) => tx.savepoint(cb as never),
        () => unlock(),
      ),
    ),
  )
  await withLock(async (free) => {
    unlock = free
    const res = await app.inject({ method: 'POST', url: '/b' })
    expect(res.statusCode).toBe(200)
    expect(await fx.notes(), 'a row of the rolled-back savepoint, committed with a 200').toEqual([])
    expect((res.json() as { late: string }).late).not.toBe('ran')
  })
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
}, 60_000)

test('app.db.transaction(): a statement of a failed savepoint sent behind its ROLLBACK TO is not committed', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  await app.ready()
  const outcome = await withLock((free) =>
    app.db.transaction(async (sql) => lateInSavepoint((cb) => sql.savepoint(cb as never), free)),
  )
  expect(await fx.notes(), 'a row of the rolled-back savepoint').toEqual([])
  expect((outcome as { late: string }).late).not.toBe('ran')
}, 60_000)

import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp } from '../../../support/app.js'
import { sleep, waitFor } from '../../../support/database.js'
import { noteTable } from '../../../support/note-table.js'

// DEFECT (probe-queryapi, high): a begin() block whose callback throws is rolled back, and begin()
// rejects with the callback's error. But a statement sent on the block's handle after the callback
// threw and before the block's ROLLBACK was answered (a fire-and-forget branch of the callback, a
// retry loop, a Promise.race loser) is still taken as the block's: it is queued on the connection
// behind the ROLLBACK, runs after it in autocommit, and is COMMITTED. The caller sees begin()
// reject ("nothing of the block was written") while a write of that block is in the database.
// Same on request.db.begin(), app.db.lease().begin() and app.db.transaction() (lease.ts
// transaction(): the block's token stays the open one until the ROLLBACK's answer).
// README ("request.db"): a statement "on the handle of a block that has ended, is refused with
// FST_PG_POOL_OUTSIDE_BLOCK"; "would run outside the block it was given for".
// Expected: once the callback has settled, its handle's statements are refused; nothing of a
// rolled-back block is committed.
//
// Deterministic: the block's first statement waits for an advisory lock the test holds, so the
// ROLLBACK is queued behind it while the late statement is sent; the lock is freed only after.

const fx = noteTable()
failOnProcessErrors()

const LOCK = 7_140_001

type Handle = (strings: TemplateStringsArray, ...values: unknown[]) => Promise<unknown>

/** A deferred signal. */
function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve = () => {}
  const promise = new Promise<void>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

/**
 * Runs `begin` (a begin()-like call) whose callback sends a statement that waits for the lock and
 * throws; then sends a late insert on the block's handle; frees the lock; returns what became of it.
 */
async function lateStatement(
  begin: (callback: (tx: Handle) => Promise<unknown>) => Promise<unknown>,
): Promise<{ block: string; late: string; notes: string[] }> {
  const holder = await fx.db.sql.reserve()
  try {
    await holder`select pg_advisory_lock(${LOCK})`
    let handle: Handle | undefined
    const thrown = signal()
    const block = begin(async (tx) => {
      handle = tx
      tx`select pg_advisory_lock(${LOCK})`.catch(() => {})
      // The statement is on the server, waiting for the lock.
      await waitFor(
        async () =>
          (
            await fx.db
              .sql`select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and query like '%pg_advisory_lock%' and pid <> pg_backend_pid()`
          )[0]?.n === 1,
      )
      thrown.resolve()
      throw new Error('the block fails')
    }).then(
      () => 'resolved',
      (error: Error) => error.message,
    )
    await thrown.promise
    // Past the microtasks that send the ROLLBACK (queued behind the waiting statement).
    await sleep(50)
    const late = (handle as Handle)`insert into note values ('late')`.then(
      () => 'ran',
      (error: { code?: string }) => error.code ?? 'error',
    )
    await sleep(50)
    await holder`select pg_advisory_unlock(${LOCK})`
    return { block: await block, late: await late, notes: await fx.notes() }
  } finally {
    holder.release()
  }
}

test('request.db.begin(): a statement of the failed block sent behind its ROLLBACK is not committed', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.post('/b', async (request) => lateStatement((callback) => request.db.begin(callback as never)))
  const res = await app.inject({ method: 'POST', url: '/b' })
  expect(res.statusCode).toBe(200)
  const outcome = res.json() as { block: string; late: string; notes: string[] }
  expect(outcome.block).toBe('the block fails')
  expect(outcome.notes, 'a row of the rolled-back block').toEqual([])
  expect(outcome.late).not.toBe('ran')
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
}, 60_000)

test('app.db.transaction(): a statement of the failed transaction sent behind its ROLLBACK is not committed', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  await app.ready()
  const outcome = await lateStatement((callback) => app.db.transaction(callback as never))
  expect(outcome.block).toBe('the block fails')
  expect(outcome.notes, 'a row of the rolled-back transaction').toEqual([])
  expect(outcome.late).not.toBe('ran')
}, 60_000)

test('app.db.lease().begin(): a statement of the failed block sent behind its ROLLBACK is not committed', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  await app.ready()
  const lease = await app.db.lease()
  try {
    const outcome = await lateStatement((callback) => lease.begin(callback as never))
    expect(outcome.block).toBe('the block fails')
    expect(outcome.notes, 'a row of the rolled-back block').toEqual([])
    expect(outcome.late).not.toBe('ran')
  } finally {
    await lease.release()
  }
}, 60_000)

import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { noteTable } from '../../../support/note-table.js'

// DEFECT (probe-third-api): an outer savepoint() whose callback returns while a nested
// `outer.savepoint(...)` it started (not awaited) is still running: the outer's RELEASE SAVEPOINT is
// refused with FST_PG_POOL_OUTSIDE_BLOCK (the inner's handle is the open one, #openHandle), and so is
// its ROLLBACK TO SAVEPOINT. The outer savepoint() REJECTS, yet nothing rolled its work back: its
// insert stays in the enclosing transaction and is committed with a 200. A handler that catches the
// rejection (the README: savepoint() "rolls back alone") believes the work undone and may redo it.
// Expected: a savepoint() that rejects has rolled its work back, or a savepoint whose callback
// returned resolves (its RELEASE sent; the leaked inner's statements refused, as a settled block's),
// or the request fails and nothing of it commits.

const fx = noteTable()
failOnProcessErrors()

type Handle = ((strings: TemplateStringsArray, ...values: unknown[]) => Promise<unknown>) & {
  savepoint: (fn: (sp: Handle) => Promise<unknown>) => Promise<unknown>
}

/** The outer savepoint inserts, starts an inner one it does not await, and returns. */
async function outerLeaksInner(savepoint: (fn: (sp: Handle) => Promise<unknown>) => Promise<unknown>) {
  let innerDone: Promise<string> = Promise.resolve('not started')
  let release = () => {}
  const gate = new Promise<void>((resolve) => {
    release = resolve
  })
  const outer = await savepoint(async (sp) => {
    await sp`insert into note values ('outer')`
    innerDone = sp
      .savepoint(async (inner) => {
        await gate
        await inner`insert into note values ('inner')`
      })
      .then(
        () => 'inner kept',
        (error: { code?: string }) => error.code ?? 'error',
      )
    return 'outer returned'
  }).then(
    (value) => value as string,
    (error: { code?: string }) => `rejected ${error.code ?? 'error'}`,
  )
  release()
  return { outer, inner: await innerDone }
}

function expectNoRejectedWrite(outer: string, notes: string[]): void {
  const rejectedButCommitted = outer.startsWith('rejected') && notes.includes('outer')
  expect(rejectedButCommitted, `savepoint() ${outer}, yet its write committed: ${JSON.stringify(notes)}`).toBe(false)
}

test('request.db.begin(): an outer savepoint that rejects does not commit its write', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.post('/b', async (request) =>
    request.db.begin(async (tx) => outerLeaksInner((fn) => (tx as unknown as Handle).savepoint(fn))),
  )
  const res = await app.inject({ method: 'POST', url: '/b' })
  if (res.statusCode >= 300) expect(await fx.notes()).toEqual([])
  else expectNoRejectedWrite((res.json() as { outer: string }).outer, await fx.notes())
  // The leaked inner savepoint never writes.
  expect(await fx.notes()).not.toContain('inner')
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
}, 60_000)

test('route transaction: an outer savepoint that rejects does not commit its write', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.post('/r', { config: { db: { transaction: true } } }, async (request) =>
    outerLeaksInner((fn) => (request.db as unknown as Handle).savepoint(fn)),
  )
  const res = await app.inject({ method: 'POST', url: '/r' })
  if (res.statusCode >= 300) expect(await fx.notes()).toEqual([])
  else expectNoRejectedWrite((res.json() as { outer: string }).outer, await fx.notes())
  expect(await fx.notes()).not.toContain('inner')
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
}, 60_000)

test('app.db.transaction(): an outer savepoint that rejects does not commit its write', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  await app.ready()
  const outcome = await app.db
    .transaction(async (sql) => outerLeaksInner((fn) => (sql as unknown as Handle).savepoint(fn)))
    .catch(() => undefined)
  if (outcome === undefined) expect(await fx.notes()).toEqual([])
  else expectNoRejectedWrite(outcome.outer, await fx.notes())
  expect(await fx.notes()).not.toContain('inner')
}, 60_000)

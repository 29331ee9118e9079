import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { noteTable } from '../../../support/note-table.js'

// DEFECT (probe-queryapi): the core README says `request.db.savepoint(fn)` "rolls back alone when
// its callback throws". A statement the handler sends on request.db (or on a begin() block's
// handle, or in app.db.transaction) BESIDE a savepoint whose callback is running goes on the
// same connection inside the savepoint, and ROLLBACK TO SAVEPOINT takes it with it: the reply is a
// 200 and the write is silently gone. The suite refuses the same mistake next to a begin() block
// (FST_PG_POOL_OUTSIDE_BLOCK, "on the request's one connection it would run inside the block and
// share its fate ... while its caller believes it outside"), but savepoint() hands its callback
// the very handle it was called on, so nothing can tell the two apart.
// Expected: a write the handler sent outside the savepoint is either committed with a 2xx, or
// refused (the request fails and nothing half-done commits); never a 2xx without it.

const fx = noteTable()
failOnProcessErrors()

type Outcome = { status: number; notes: string[] }

function failing(tag: string) {
  return async (sp: (strings: TemplateStringsArray, ...values: unknown[]) => Promise<unknown>) => {
    await sp`insert into note values (${`inner-${tag}`})`
    throw new Error('the nested work fails')
  }
}

function expectNoSilentLoss(outcome: Outcome, audit: string): void {
  const lost = outcome.status < 300 && !outcome.notes.includes(audit)
  expect(lost, `a ${outcome.status} reply whose write "${audit}" was rolled back with the savepoint`).toBe(false)
  expect(outcome.notes.some((note) => note.startsWith('inner-'))).toBe(false)
}

test('route transaction: an insert sent on request.db beside a failing savepoint is not silently rolled back', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.post('/sp', { config: { db: { transaction: true } } }, async (request) => {
    const [inner] = await Promise.all([
      request.db.savepoint(failing('route') as never).then(
        () => 'kept',
        () => 'rolled back',
      ),
      request.db`insert into note values ('audit-route')`,
    ])
    return { inner }
  })
  const res = await app.inject({ method: 'POST', url: '/sp' })
  expectNoSilentLoss({ status: res.statusCode, notes: await fx.notes() }, 'audit-route')
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
})

test("a begin() block: an insert on the block's handle beside its failing savepoint is not silently rolled back", async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.post('/begin', async (request) =>
    request.db.begin(async (tx) => {
      const [inner] = await Promise.all([
        tx.savepoint(failing('begin') as never).then(
          () => 'kept',
          () => 'rolled back',
        ),
        tx`insert into note values ('audit-begin')`,
      ])
      return { inner }
    }),
  )
  const res = await app.inject({ method: 'POST', url: '/begin' })
  expectNoSilentLoss({ status: res.statusCode, notes: await fx.notes() }, 'audit-begin')
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
})

test('app.db.transaction: an insert beside a failing savepoint does not resolve as if it committed', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  await app.ready()
  const resolved = await app.db
    .transaction(async (sql) => {
      await Promise.all([
        sql.savepoint(failing('pool') as never).then(
          () => 'kept',
          () => 'rolled back',
        ),
        sql`insert into note values ('audit-pool')`,
      ])
    })
    .then(
      () => true,
      () => false,
    )
  expectNoSilentLoss({ status: resolved ? 200 : 500, notes: await fx.notes() }, 'audit-pool')
})

test('control: the savepoint callback sending on the handle it was given rolls back alone, the rest commits', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.post('/own', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into note values ('before')`
    const inner = await request.db.savepoint(failing('own') as never).then(
      () => 'kept',
      () => 'rolled back',
    )
    await request.db`insert into note values ('after')`
    return { inner }
  })
  const res = await app.inject({ method: 'POST', url: '/own' })
  expect(res.json()).toEqual({ inner: 'rolled back' })
  expect(await fx.notes()).toEqual(['after', 'before'])
})

test('control: nested savepoints, each on the handle it was given: the inner rolls back alone, the outer commits', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.post('/nested', { config: { db: { transaction: true } } }, async (request) => {
    const inner = await request.db.savepoint(async (outer) => {
      await outer`insert into note values ('outer')`
      const result = await outer.savepoint(failing('nested') as never).then(
        () => 'kept',
        () => 'rolled back',
      )
      await outer.savepoint(async (again) => again`insert into note values ('outer-again')`)
      return result
    })
    return { inner }
  })
  const res = await app.inject({ method: 'POST', url: '/nested' })
  expect(res.json()).toEqual({ inner: 'rolled back' })
  expect(await fx.notes()).toEqual(['outer', 'outer-again'])
})

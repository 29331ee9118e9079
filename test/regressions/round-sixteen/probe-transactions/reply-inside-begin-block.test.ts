import pgPoolCore, { type RequestDb } from '@fastify-pg-pool/core'
import type { FastifyInstance } from 'fastify'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { sleep, waitFor } from '../../../support/database.js'
import { transactionFixture } from '../../../support/transaction-fixture.js'

// DEFECT (probe-transactions, round sixteen): a `request.db.begin()` block still open when the
// reply is decided is rolled back, and the client gets the handler's 2xx anyway.
//
// What the user does, on a route without a route transaction:
//   await request.db.begin(async (tx) => {
//     const [order] = await tx`insert ... returning id`
//     reply.code(201).send(order)            // answer as soon as the id is known
//     await tx`insert into audit ...`
//   })
// or forgets to await the block (`request.db.begin(...).catch(log); return { ok: true }`).
// What they see: 201 (or 200) with the new id, and nothing in the database: the pool ends the lease
// when the reply is decided, cuts the block short (its later statements get FST_PG_POOL_RELEASED,
// begin() rejects with FST_PG_POOL_COMMIT_FAILED "the connection was lost") and rolls it back with
// the connection's reset. A success for work that was not committed, with nothing in the reply to
// tell; the client will never retry.
// What they should see: what the README promises for a block the handler opened in SQL and left
// open when it replied ("rolled back ... and when it wrote, the reply becomes a 500
// FST_PG_POOL_COMMIT_FAILED ... instead of a 2xx for work that was not committed"); the pool knows
// this block is open without asking (it opened it), so `begin()` is not less covered than SQL.
// Cause: packages/core/src/lease.ts leftBlockOpen() returns undefined whenever a begin() block of
// the pool's is open (`|| this.#block`), so onSend (request-lease.ts) goes straight to
// finishPlain and the 2xx.

const fx = transactionFixture({ deferred: true })
failOnProcessErrors()

test('a reply sent inside an awaited begin() block that wrote: not a 2xx, nothing committed', async () => {
  const { app } = fx.current
  const seen: string[] = []
  app.post('/orders', async (request, reply) => {
    await request.db
      .begin(async (tx) => {
        await tx`insert into note values ('order')`
        reply.code(201).send({ id: 1 })
        await sleep(50)
        await tx`insert into note values ('audit')`
      })
      .catch((error: { code?: string }) => seen.push(`begin rejected ${error.code}`))
    return reply
  })
  app.post('/next', async (request) => {
    await request.db`insert into note values ('next')`
    return { ok: true }
  })
  const res = await app.inject({ method: 'POST', url: '/orders' })
  const notes = await fx.notes()
  // Before the fix: 201 {"id":1} with notes [] (the block rolled back).
  expect({ status: res.statusCode, notes }).toEqual({ status: 500, notes: [] })
  expect(res.json().code).toBe('FST_PG_POOL_COMMIT_FAILED')
  // The rest of the block is refused (the reply was decided), and begin() rejects.
  expect(await waitFor(() => seen.length === 1)).toBe(true)
  expect(seen).toEqual(['begin rejected FST_PG_POOL_RELEASED'])
  // The connection (max: 1) serves the next request, outside any block.
  expect((await app.inject({ method: 'POST', url: '/next' })).statusCode).toBe(200)
  expect(await fx.notes()).toEqual(['next'])
})

test('a begin() block not awaited, still open when the handler returns: not a 2xx, nothing committed', async () => {
  const { app } = fx.current
  const seen: string[] = []
  app.post('/forgot-await', async (request) => {
    request.db
      .begin(async (tx) => {
        await tx`insert into note values ('floating')`
        await sleep(100)
      })
      .catch((error: { code?: string }) => seen.push(`begin rejected ${error.code}`))
    await sleep(20)
    return { ok: true }
  })
  const res = await app.inject({ method: 'POST', url: '/forgot-await' })
  expect({ status: res.statusCode, notes: await fx.notes() }).toEqual({ status: 500, notes: [] })
  expect(res.json().code).toBe('FST_PG_POOL_COMMIT_FAILED')
  expect(await waitFor(() => seen.length === 1)).toBe(true)
  expect(seen[0]).toMatch(/^begin rejected FST_PG_POOL_/)
})

test('a begin() block whose write comes right after the reply was sent inside it: the write is refused, never rolled back under a 2xx', async () => {
  const { app } = fx.current
  app.post('/read-then-write', async (request, reply) => {
    await request.db
      .begin(async (tx) => {
        await tx`select 1`
        reply.send({ ok: true })
        await tx`insert into note values ('after-send')`
      })
      .catch(() => {})
    return reply
  })
  const res = await app.inject({ method: 'POST', url: '/read-then-write' })
  // Before the fix: 200 with nothing committed; the insert is refused now (the reply was decided).
  expect({ status: res.statusCode, notes: await fx.notes() }).toEqual({ status: 200, notes: [] })
})

test('a begin() block that only read, open when the reply is decided: the reply is left as it is', async () => {
  const { app } = fx.current
  app.get('/report', async (request, reply) => {
    await request.db
      .begin('isolation level repeatable read read only', async (tx) => {
        const [row] = await tx<{ n: number }[]>`select count(*)::int as n from note`
        reply.send({ n: row?.n })
        await sleep(20)
      })
      .catch(() => {})
    return reply
  })
  const res = await app.inject('/report')
  expect({ status: res.statusCode, body: res.json() }).toEqual({ status: 200, body: { n: 0 } })
})

test('a begin() block awaited before the reply: committed, 200 (unchanged)', async () => {
  const { app } = fx.current
  app.post('/awaited', async (request) => {
    await request.db.begin(async (tx) => {
      await tx`insert into note values ('awaited')`
    })
    return { ok: true }
  })
  const res = await app.inject({ method: 'POST', url: '/awaited' })
  expect({ status: res.statusCode, notes: await fx.notes() }).toEqual({ status: 200, notes: ['awaited'] })
})

test('on request.dbs.<name> beside a route transaction: a begin() block still running, the route rolls back too', async () => {
  const { app } = fx.current
  await app.register(pgPoolCore, { name: 'billing', connection: fx.db.url, pool: { max: 1 } })
  app.post('/checkout', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into note values ('order')`
    const billing = (request.dbs as Record<string, RequestDb>).billing as RequestDb
    await billing
      .begin(async (tx) => {
        await tx`insert into note values ('invoice')`
        reply.send({ ok: true })
        await sleep(50)
      })
      .catch(() => {})
    return reply
  })
  const res = await app.inject({ method: 'POST', url: '/checkout' })
  expect(await waitFor(() => app.pgPools.all().every((view) => view.stats().leased === 0))).toBe(true)
  // Before the fix: 200 with the order committed and the invoice rolled back.
  expect({ status: res.statusCode, code: res.json().code, notes: await fx.notes() }).toEqual({
    status: 500,
    code: 'FST_PG_POOL_COMMIT_FAILED',
    notes: [],
  })
})

/** A handler that starts a block it does not await, and replies `ticks` microtasks after its callback ended. */
function floatingBlock(app: FastifyInstance, out: string[]) {
  app.post('/floating/:bad', async (request) => {
    const { bad } = request.params as { bad: string }
    let callbackEnded = () => {}
    const ended = new Promise<void>((resolve) => {
      callbackEnded = resolve
    })
    request.db
      .begin(async (tx) => {
        await tx`insert into note values ('floating')`
        if (bad === '1') await tx`insert into child values (1, 999)`
        callbackEnded()
      })
      .then(
        () => out.push('begin resolved'),
        (error: { code?: string }) => out.push(`begin rejected ${error.code}`),
      )
    await ended
    const ticks = Number((request.query as { ticks?: string }).ticks ?? 0)
    for (let i = 0; i < ticks; i++) await null
    return { ok: true }
  })
}

test('a reply decided just as a begin() callback ends: never a 500 over a committed block, never a 2xx over a failed one', async () => {
  const { app } = fx.current
  const out: string[] = []
  floatingBlock(app, out)
  for (const bad of ['0', '1']) {
    // 0 ticks: the reply is decided before the block's COMMIT is sent; 5: while it is out.
    for (const ticks of [0, 5]) {
      const res = await app.inject({ method: 'POST', url: `/floating/${bad}?ticks=${ticks}` })
      expect(await waitFor(() => out.length === 1)).toBe(true)
      const notes = await fx.notes()
      const seen = { bad, ticks, status: res.statusCode, notes, begin: out.splice(0)[0] }
      if (res.statusCode < 300) expect(seen).toMatchObject({ notes: ['floating'], begin: 'begin resolved' })
      else expect(seen).toMatchObject({ status: 500, notes: [] })
      // The block with a failing deferred constraint never answers 2xx.
      if (bad === '1') expect(seen).toMatchObject({ status: 500, notes: [] })
      await fx.db.sql`truncate note, child`
    }
  }
})

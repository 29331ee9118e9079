import { describe, expect, test } from 'vitest'
import { transactionFixture, tx } from '../support/transaction-fixture.js'

// Found by hostile probing (round 8, request.db misuse; the first two failed before the fix): a
// route transaction the handler ended in SQL went on outside any transaction. `rollback` from an
// error helper, then more work, answered 200 with only the later work committed; `commit`, more
// work, then a throw answered 422 with the work after the COMMIT committed too. Now the handler's
// COMMIT/ROLLBACK (by the server's command tag) makes every later statement refused and the reply a
// 500 FST_PG_POOL_TRANSACTION_ENDED; the pool sends ROLLBACK instead of its COMMIT.

const fx = transactionFixture()

const idleInTransaction = async () =>
  (
    await fx.db.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
      where application_name = ${fx.current.applicationName} and state like 'idle in transaction%'`
  )[0]?.n

describe('a route transaction ended by a statement of the handler', () => {
  test('rollback from an error helper, then more work: 500 TRANSACTION_ENDED, nothing committed', async () => {
    const { app } = fx.current
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('order')`
      await request.db`insert into nowhere values (1)`.catch(() => request.db`rollback`)
      await request.db`insert into note values ('audit')`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/order' })
    expect(res.statusCode).toBe(500)
    expect(res.json().code).toBe('FST_PG_POOL_TRANSACTION_ENDED')
    expect(await fx.notes()).toEqual([])
  })

  test('commit, more work, then a throw: what ran after the COMMIT is refused, not committed', async () => {
    const { app } = fx.current
    let second: unknown
    app.post('/order', tx, async (request, reply) => {
      await request.db`insert into note values ('first')`
      await request.db`commit`
      second = await request.db`insert into note values ('second')`.then(
        () => 'ran',
        (error: { code?: string }) => error.code,
      )
      return reply.code(422).send({ failed: true })
    })
    const res = await app.inject({ method: 'POST', url: '/order' })
    expect(second).toBe('FST_PG_POOL_TRANSACTION_ENDED')
    expect(res.statusCode).toBe(422)
    expect(await fx.notes()).toEqual(['first'])
  })

  test('commit in SQL and a 200: the reply becomes a 500 naming the COMMIT (its work stays committed)', async () => {
    const { app } = fx.current
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('committed by the handler')`
      await request.db`commit`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/order' })
    expect(res.statusCode).toBe(500)
    expect(res.json()).toMatchObject({ code: 'FST_PG_POOL_TRANSACTION_ENDED' })
    expect(res.json().message).toContain('COMMIT')
    expect(await fx.notes()).toEqual(['committed by the handler'])
  })

  test('COMMIT AND CHAIN: later statements refused, the chained block rolled back, nothing idle in transaction', async () => {
    const { app } = fx.current
    app.post('/chain', tx, async (request) => {
      await request.db`insert into note values ('before chain')`
      await request.db`commit and chain`
      await request.db`insert into note values ('in chained block')`
      return { ok: true }
    })
    app.post('/next', tx, async (request) => {
      await request.db`insert into note values ('next')`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/chain' })
    expect(res.statusCode).toBe(500)
    expect(res.json().code).toBe('FST_PG_POOL_TRANSACTION_ENDED')
    expect(await fx.notes()).toEqual(['before chain'])
    expect(await idleInTransaction()).toBe(0)
    // The connection serves the next request, in a transaction of its own.
    expect((await app.inject({ method: 'POST', url: '/next' })).statusCode).toBe(200)
    expect((await fx.notes()).sort()).toEqual(['before chain', 'next'])
  })

  test('ROLLBACK TO SAVEPOINT in the handler SQL is no end: the route commits', async () => {
    const { app } = fx.current
    app.post('/sp', tx, async (request) => {
      await request.db`insert into note values ('kept')`
      await request.db`savepoint s1`
      await request.db`insert into note values ('undone')`
      await request.db`rollback to savepoint s1`
      await request.db`release savepoint s1`
      await request.db`insert into note values ('after')`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/sp' })
    expect(res.statusCode).toBe(200)
    expect((await fx.notes()).sort()).toEqual(['after', 'kept'])
  })

  test('savepoint() whose callback throws (its own ROLLBACK TO) is no end: the route commits', async () => {
    const { app } = fx.current
    app.post('/sp', tx, async (request) => {
      await request.db`insert into note values ('kept')`
      await request.db
        .savepoint(async (sp) => {
          await sp`insert into note values ('undone')`
          throw new Error('inner')
        })
        .catch(() => {})
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/sp' })
    expect(res.statusCode).toBe(200)
    expect(await fx.notes()).toEqual(['kept'])
  })

  test('a plain route: COMMIT and ROLLBACK in SQL are the handler own business', async () => {
    const { app } = fx.current
    app.post('/plain', async (request) => {
      await request.db`begin`
      await request.db`insert into note values ('plain')`
      await request.db`commit`
      await request.db`insert into note values ('plain after')`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/plain' })
    expect(res.statusCode).toBe(200)
    expect((await fx.notes()).sort()).toEqual(['plain', 'plain after'])
  })
})

describe('a begin() block ended by a statement of its callback', () => {
  test('commit in the block: begin() rejects TRANSACTION_ENDED, later block statements refused, request.db works after', async () => {
    const { app } = fx.current
    let inBlockAfter: unknown
    let blockOutcome: unknown
    app.post('/block', async (request) => {
      blockOutcome = await request.db
        .begin(async (sql) => {
          await sql`insert into note values ('block first')`
          await sql`commit`
          inBlockAfter = await sql`insert into note values ('block second')`.then(
            () => 'ran',
            (error: { code?: string }) => error.code,
          )
        })
        .then(
          () => 'committed',
          (error: { code?: string }) => error.code,
        )
      await request.db`insert into note values ('after block')`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/block' })
    expect(res.statusCode).toBe(200)
    expect({ inBlockAfter, blockOutcome }).toEqual({
      inBlockAfter: 'FST_PG_POOL_TRANSACTION_ENDED',
      blockOutcome: 'FST_PG_POOL_TRANSACTION_ENDED',
    })
    expect((await fx.notes()).sort()).toEqual(['after block', 'block first'])
    expect(await idleInTransaction()).toBe(0)
  })
})

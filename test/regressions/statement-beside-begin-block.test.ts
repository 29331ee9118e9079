import { describe, expect, test } from 'vitest'
import { transactionFixture } from '../support/transaction-fixture.js'

// Found by hostile probing (round 8, request.db misuse; these failed before the fix): a statement
// sent on request.db itself while a begin() block was open ran inside the block, on the request's
// one connection. Beside a block that then threw, it was reported fulfilled and rolled back with the
// block (200, table empty); a failing one poisoned the block (25P02 for the block's own insert); the
// same on app.db.lease(). Such a statement is refused now (FST_PG_POOL_OUTSIDE_BLOCK).

const fx = transactionFixture()

const outcome = (p: PromiseLike<unknown>) =>
  Promise.resolve(p).then(
    () => 'ok',
    (error: { code?: string }) => error.code ?? 'error',
  )

describe('a statement on request.db while its begin() block is open', () => {
  test('beside a block that throws: refused, never reported done, nothing of it written', async () => {
    const { app } = fx.current
    app.get('/mix', async (request) => {
      const block = request.db.begin(async (sql) => {
        await sql`insert into note values ('in-block')`
        throw new Error('block fails')
      })
      const audit = Promise.resolve().then(() => request.db`insert into note values ('audit')`)
      const [b, a] = await Promise.all([outcome(block), outcome(audit)])
      return { block: b, audit: a }
    })
    const res = await app.inject('/mix')
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({ block: 'error', audit: 'FST_PG_POOL_OUTSIDE_BLOCK' })
    expect(await fx.notes()).toEqual([])
  })

  test('a failing statement beside the block does not fail the block, which commits its own work', async () => {
    await fx.db.sql`alter table note add primary key (body)`
    try {
      await fx.db.sql`insert into note values ('taken')`
      const { app } = fx.current
      app.get('/mix', async (request) => {
        const block = request.db.begin(async (sql) => {
          await sql`select pg_sleep(0.05)`
          await sql`insert into note values ('blk')`
        })
        const dup = Promise.resolve().then(() => request.db`insert into note values ('taken')`)
        const [b, d] = await Promise.all([outcome(block), outcome(dup)])
        return { block: b, dup: d }
      })
      const res = await app.inject('/mix')
      expect(res.json()).toEqual({ block: 'ok', dup: 'FST_PG_POOL_OUTSIDE_BLOCK' })
      expect((await fx.notes()).sort()).toEqual(['blk', 'taken'])
    } finally {
      await fx.db.sql`alter table note drop constraint note_pkey`
    }
  })

  test('request.db used inside the callback by mistake: refused, the block rolls back, the reply is coded', async () => {
    const { app } = fx.current
    app.post('/mistake', async (request) => {
      await request.db.begin(async (sql) => {
        await sql`insert into note values ('first')`
        await request.db`insert into note values ('wrong handle')`
      })
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/mistake' })
    expect(res.statusCode).toBe(500)
    expect(res.json().code).toBe('FST_PG_POOL_OUTSIDE_BLOCK')
    expect(await fx.notes()).toEqual([])
  })

  test('request.db before and after the block runs outside it, as sent', async () => {
    const { app } = fx.current
    app.post('/around', async (request) => {
      await request.db`insert into note values ('before')`
      await request.db
        .begin(async (sql) => {
          await sql`insert into note values ('inside')`
          throw new Error('undo the block only')
        })
        .catch(() => {})
      await request.db`insert into note values ('after')`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/around' })
    expect(res.statusCode).toBe(200)
    expect((await fx.notes()).sort()).toEqual(['after', 'before'])
  })

  test('the block handle, its savepoints, file-less unsafe and helpers all run inside the block', async () => {
    const { app } = fx.current
    app.post('/inside', async (request) => {
      await request.db.begin(async (sql) => {
        await sql`insert into note values ('a')`
        await sql.unsafe("insert into note values ('b')")
        await sql.savepoint(async (sp) => {
          await sp`insert into note values ('c')`
        })
        await sql`insert into note ${sql({ body: 'd' })}`
      })
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/inside' })
    expect(res.statusCode).toBe(200)
    expect((await fx.notes()).sort()).toEqual(['a', 'b', 'c', 'd'])
  })

  test('app.db.lease(): a statement on the lease beside its begin() block is refused, not undone', async () => {
    const { app } = fx.current
    await app.ready()
    const lease = await app.db.lease()
    try {
      const block = lease.begin(async (sql) => {
        await sql`insert into note values ('job')`
        await sql`select pg_sleep(0.05)`
        throw new Error('job fails')
      })
      const log = Promise.resolve().then(() => lease`insert into note values ('job-log')`)
      const [b, l] = await Promise.all([outcome(block), outcome(log)])
      expect({ block: b, log: l }).toEqual({ block: 'error', log: 'FST_PG_POOL_OUTSIDE_BLOCK' })
      // After the block, the lease serves again.
      await lease`insert into note values ('job-log')`
    } finally {
      await lease.release()
    }
    expect(await fx.notes()).toEqual(['job-log'])
  })

  test('app.db.begin(): its handle runs inside, the block commits', async () => {
    const { app } = fx.current
    await app.ready()
    await app.db.begin(async (sql) => {
      await sql`insert into note values ('pool-block')`
      await sql.savepoint(async (sp) => sp`insert into note values ('pool-sp')`)
    })
    expect((await fx.notes()).sort()).toEqual(['pool-block', 'pool-sp'])
  })
})

import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { transactionFixture, tx } from '../support/transaction-fixture.js'

// Found by hostile probing (round 8, second round against fda90b9; the cases of stale savepoint
// counts, failed COMMIT/PREPARE TRANSACTION, an onLease COMMIT and a savepoint inside a message of
// several statements failed before the fix, which asks the server whether the block is still open).
// A route transaction / begin() block ended by the handler's SQL
// (fda90b9). README (core, "The pool owns the route transaction's end"): a statement of the
// handler that ends it (COMMIT, END, ROLLBACK, ABORT, PREPARE TRANSACTION) refuses every later
// statement with FST_PG_POOL_TRANSACTION_ENDED and the reply becomes a 500; "a ROLLBACK while a
// savepoint the handler's SQL opened is still open is taken for ROLLBACK TO SAVEPOINT". And:
// "A client never receives a 2xx status for work that is not committed".

const fx = transactionFixture({ deferred: true })

const idleInTransaction = async () =>
  (
    await fx.db.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
      where application_name = ${fx.current.applicationName} and state like 'idle in transaction%'`
  )[0]?.n

const code = (p: PromiseLike<unknown>) =>
  Promise.resolve(p).then(
    () => 'ok',
    (error: { code?: string }) => error.code ?? 'error',
  )

function addNext() {
  fx.current.app.post('/next', tx, async (request) => {
    const [row] = await request.db`select now() = statement_timestamp() as fresh,
      (select count(*)::int from pg_prepared_xacts) as prepared`
    await request.db`insert into note values ('next')`
    return row
  })
}

async function nextIsClean() {
  const { app } = fx.current
  const res = await app.inject({ method: 'POST', url: '/next' })
  expect(res.statusCode, res.body).toBe(200)
  expect(res.json()).toMatchObject({ prepared: 0 })
  expect(await fx.notes()).toContain('next')
  expect(await idleInTransaction()).toBe(0)
}

describe('ROLLBACK not seen because the savepoint count is stale', () => {
  test('SAVEPOINT a; SAVEPOINT b; RELEASE a (releases both); ROLLBACK; more work: never a 2xx, the later work not committed', async () => {
    const { app } = fx.current
    addNext()
    app.post('/nested', tx, async (request) => {
      await request.db`insert into note values ('first')`
      await request.db`savepoint a`
      await request.db`savepoint b`
      await request.db`release savepoint a`
      // No savepoint is open now: this ROLLBACK ends the route transaction.
      await request.db`rollback`
      await request.db`insert into note values ('after rollback')`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/nested' })
    expect({ status: res.statusCode, code: res.json().code, notes: await fx.notes() }).toEqual({
      status: 500,
      code: 'FST_PG_POOL_TRANSACTION_ENDED',
      notes: [],
    })
  })

  test('SAVEPOINT a; SAVEPOINT b; ROLLBACK TO a; RELEASE a; ROLLBACK; more work: never a 2xx', async () => {
    const { app } = fx.current
    addNext()
    app.post('/nested', tx, async (request) => {
      await request.db`insert into note values ('first')`
      await request.db`savepoint a`
      await request.db`savepoint b`
      await request.db`rollback to savepoint a`
      await request.db`release savepoint a`
      await request.db`rollback`
      await request.db`insert into note values ('after rollback')`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/nested' })
    expect({ status: res.statusCode, code: res.json().code, notes: await fx.notes() }).toEqual({
      status: 500,
      code: 'FST_PG_POOL_TRANSACTION_ENDED',
      notes: [],
    })
  })
})

describe('a transaction end that fails still ends the transaction', () => {
  test('a SQL COMMIT failing on a deferred constraint, caught, then more work: never a 2xx with the later work committed alone', async () => {
    const { app } = fx.current
    addNext()
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('order')`
      await request.db`insert into child values (1, 999)`
      // The deferred foreign key fails at COMMIT: the server ends (rolls back) the transaction.
      const committed = await code(request.db`commit`)
      await request.db`insert into note values ('audit: ' || ${committed})`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/order' })
    const notes = await fx.notes()
    expect({ status: res.statusCode, notes }).toEqual({ status: 500, notes: [] })
    await nextIsClean()
  })

  test('a failed PREPARE TRANSACTION (max_prepared_transactions = 0), caught, then more work: never a 2xx', async () => {
    const [{ n }] = (await fx.db.sql`select current_setting('max_prepared_transactions')::int as n`) as unknown as [
      { n: number },
    ]
    if (n !== 0) return
    const { app } = fx.current
    addNext()
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('order')`
      const prepared = await code(request.db`prepare transaction 'blocks2'`)
      await request.db`insert into note values ('audit: ' || ${prepared})`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/order' })
    const notes = await fx.notes()
    expect({ status: res.statusCode, notes }).toEqual({ status: 500, notes: [] })
    await nextIsClean()
  })

  test('in a begin() block: a SQL COMMIT failing on a deferred constraint, caught: begin() does not resolve as committed', async () => {
    const { app } = fx.current
    addNext()
    let outcome: unknown
    app.post('/block', async (request) => {
      outcome = await code(
        request.db.begin(async (sql) => {
          await sql`insert into note values ('block first')`
          await sql`insert into child values (1, 999)`
          await code(sql`commit`)
          await sql`insert into note values ('block after failed commit')`
        }),
      )
      return { outcome }
    })
    const res = await app.inject({ method: 'POST', url: '/block' })
    expect(res.statusCode).toBe(200)
    const notes = await fx.notes()
    // A block that resolves has committed all its work; here its first insert was rolled back.
    expect({ outcome, notes }).not.toEqual({ outcome: 'ok', notes: ['block after failed commit'] })
    expect(outcome).not.toBe('ok')
    await nextIsClean()
  })
})

describe('statements already sent behind the ending statement', () => {
  test('Promise.all([commit, insert]) in a route transaction: never a 2xx; the insert, already sent behind the COMMIT, ran outside (documented)', async () => {
    const { app } = fx.current
    addNext()
    let after: unknown
    app.post('/all', tx, async (request) => {
      await request.db`insert into note values ('first')`
      const [, a] = await Promise.all([code(request.db`commit`), code(request.db`insert into note values ('after')`)])
      after = a
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/all' })
    expect(res.statusCode).toBe(500)
    expect(res.json().code).toBe('FST_PG_POOL_TRANSACTION_ENDED')
    // Core README: a statement already sent behind the handler's COMMIT ran outside the transaction.
    expect({ after, notes: (await fx.notes()).sort() }).toEqual({ after: 'ok', notes: ['after', 'first'] })
    await nextIsClean()
  })
})

describe('a savepoint opened inside a message of several statements', () => {
  test("unsafe('savepoint a; insert ...'), then ROLLBACK TO a: legit code, the route commits", async () => {
    const { app } = fx.current
    addNext()
    app.post('/sp', tx, async (request) => {
      await request.db`insert into note values ('kept')`
      await request.db.unsafe("savepoint a; insert into note values ('undone')")
      await request.db`rollback to savepoint a`
      await request.db`insert into note values ('after')`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/sp' })
    expect({ status: res.statusCode, body: res.statusCode === 200 ? 'ok' : res.json().code }).toEqual({
      status: 200,
      body: 'ok',
    })
    expect((await fx.notes()).sort()).toEqual(['after', 'kept'])
  })
})

describe('held: ends seen, legit statements not refused', () => {
  for (const sql of ['end', 'abort', 'rollback and chain', 'commit and chain', 'end and chain']) {
    test(`${sql} in a route transaction, then a return 200: 500 TRANSACTION_ENDED, the next request clean`, async () => {
      const { app } = fx.current
      addNext()
      let after: unknown
      app.post('/e', tx, async (request) => {
        await request.db`insert into note values ('x')`
        await request.db.unsafe(sql)
        after = await code(request.db`insert into note values ('after')`)
        return { ok: true }
      })
      const res = await app.inject({ method: 'POST', url: '/e' })
      expect(res.statusCode).toBe(500)
      expect(res.json().code).toBe('FST_PG_POOL_TRANSACTION_ENDED')
      expect(after).toBe('FST_PG_POOL_TRANSACTION_ENDED')
      const committedFirst = sql.startsWith('end') || sql.startsWith('commit')
      expect(await fx.notes()).toEqual(committedFirst ? ['x'] : [])
      await nextIsClean()
    })
  }

  test('ROLLBACK TO after an error inside the route, nested savepoints released in order, SET TRANSACTION, SET LOCAL, BEGIN (warning): 200 committed', async () => {
    const { app } = fx.current
    addNext()
    app.post('/legit', tx, async (request) => {
      await request.db`set transaction isolation level repeatable read`
      await request.db`set local statement_timeout = '5s'`
      await request.db`begin`
      await request.db`insert into note values ('a')`
      await request.db`savepoint s1`
      await request.db`insert into nowhere values (1)`.catch(() => {})
      await request.db`rollback to savepoint s1`
      await request.db`savepoint s2`
      await request.db`savepoint s3`
      await request.db`insert into note values ('b')`
      await request.db`release savepoint s3`
      await request.db`rollback to savepoint s2`
      await request.db`release savepoint s2`
      await request.db`release savepoint s1`
      await request.db`do $$ begin perform 1; end $$`
      await request.db`insert into note values ('c')`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/legit' })
    expect(res.statusCode, res.body).toBe(200)
    expect((await fx.notes()).sort()).toEqual(['a', 'c'])
    await nextIsClean()
  })

  test('CALL of a procedure that commits, in a route transaction: an error, never a 2xx, nothing committed', async () => {
    await fx.db.sql`create or replace procedure commits_inside() language plpgsql as $$
      begin insert into note values ('proc'); commit; end $$`
    const { app } = fx.current
    addNext()
    let called: unknown
    app.post('/call', tx, async (request) => {
      await request.db`insert into note values ('before')`
      called = await code(request.db`call commits_inside()`)
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/call' })
    expect(called).not.toBe('ok')
    expect(res.statusCode).toBeGreaterThanOrEqual(500)
    expect(await fx.notes()).toEqual([])
    await nextIsClean()
  })

  test('CALL of a procedure that commits on a plain route: it runs (outside any block), 200', async () => {
    await fx.db.sql`create or replace procedure commits_inside() language plpgsql as $$
      begin insert into note values ('proc'); commit; end $$`
    const { app } = fx.current
    addNext()
    app.post('/call', async (request) => {
      await request.db`call commits_inside()`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/call' })
    expect(res.statusCode, res.body).toBe(200)
    expect(await fx.notes()).toEqual(['proc'])
  })

  test("rollback inside unsafe('...; ...') is not seen (documented): confirm the documented gap", async () => {
    const { app } = fx.current
    addNext()
    app.post('/multi', tx, async (request) => {
      await request.db`insert into note values ('x')`
      await request.db.unsafe("rollback; insert into note values ('outside')")
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/multi' })
    // Documented as "Not seen": record what happens.
    expect([200, 500]).toContain(res.statusCode)
    await nextIsClean()
  })

  test('onLease sending COMMIT in a route transaction: 500 TRANSACTION_ENDED, the handler statement refused', async () => {
    await fx.current.app.close()
    const t = await coreApp(
      fx.db.url,
      { max: 1, acquireTimeout: 1000 },
      {},
      {
        onLease: async (_request, sql) => {
          await sql`insert into note values ('hook')`
          await sql`commit`
        },
      },
    )
    try {
      let handler: unknown
      t.app.post('/h', tx, async (request) => {
        handler = await code(request.db`insert into note values ('handler')`)
        return { ok: true }
      })
      const res = await t.app.inject({ method: 'POST', url: '/h' })
      // README: every later statement of the request is refused with TRANSACTION_ENDED; the reply a 500.
      expect({ status: res.statusCode, code: res.json().code, handler, notes: (await fx.notes()).sort() }).toEqual({
        status: 500,
        code: 'FST_PG_POOL_TRANSACTION_ENDED',
        handler: 'FST_PG_POOL_TRANSACTION_ENDED',
        notes: ['hook'],
      })
    } finally {
      await t.app.close()
    }
  })
})

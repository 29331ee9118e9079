import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../support/database.js'

// Found by a third round of hostile probing (the first case failed on 0dc7bab: 500
// NESTED_TRANSACTION): a handler's begin() sent while onLease's own block ran was refused. A
// holder's begin() now waits until onLease is done before any block state changes, so the hook's
// blocks and the handler's never overlap. The other cases held; they pin the order and outcomes.

let db: TestDatabase
let current: TestApp | undefined
const unhandled: unknown[] = []
const onUnhandled = (e: unknown) => unhandled.push(e)
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
  process.on('unhandledRejection', onUnhandled)
})
beforeEach(async () => {
  await db.sql`truncate ledger`
  unhandled.length = 0
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled)
  await db.drop()
})

type Sql = ((strings: TemplateStringsArray, ...values: unknown[]) => Promise<Record<string, unknown>[]>) & {
  begin: (fn: (tx: Sql) => Promise<unknown>) => Promise<unknown>
}

// onLease with a slow block of its own.
const slowBlock = (async (_request: unknown, sql: Sql) => {
  await sql.begin(async (tx) => {
    await tx`select pg_sleep(0.2)`
    await tx`select set_config('app.tenant_id', '9', false)`
  })
}) as never

describe('begin() while onLease runs its own block', () => {
  test('a statement, then begin() a tick later (Promise.all): the block waits for onLease', async () => {
    current = await coreApp(db.url, { max: 1 }, {}, { onLease: slowBlock })
    const { app } = current
    app.post('/p', async (request) => {
      const [a, b] = await Promise.all([
        request.db`select 1 as one`,
        (async () => {
          await sleep(50)
          return request.db.begin(async (tx) => {
            await tx`insert into ledger (note) values ('in block')`
            const [r] = await tx`select current_setting('app.tenant_id', true) as t`
            return r
          })
        })(),
      ])
      return { a: a[0], b }
    })
    const res = await app.inject({ method: 'POST', url: '/p' })
    expect(res.statusCode, res.body).toBe(200)
    expect(res.json()).toEqual({ a: { one: 1 }, b: { t: '9' } })
    expect(await db.sql`select note from ledger`).toEqual([{ note: 'in block' }])
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 2_000)).toBe(true)
  })

  test('control: begin() first, onLease slow block: works', async () => {
    current = await coreApp(db.url, { max: 1 }, {}, { onLease: slowBlock })
    const { app } = current
    app.post('/p', async (request) => {
      const b = await request.db.begin(async (tx) => {
        await tx`insert into ledger (note) values ('in block')`
        const [r] = await tx`select current_setting('app.tenant_id', true) as t`
        return r
      })
      return { b }
    })
    const res = await app.inject({ method: 'POST', url: '/p' })
    expect(res.statusCode, res.body).toBe(200)
    expect(res.json()).toEqual({ b: { t: '9' } })
  })

  test('onLease opens two blocks in a row; the handler begin()s first; then a second begin()', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onLease: (async (_request: unknown, sql: Sql) => {
          await sql.begin(async (tx) => tx`select set_config('app.a', '1', false)`)
          await sql.begin(async (tx) => tx`select set_config('app.b', '2', false)`)
        }) as never,
      },
    )
    const { app } = current
    app.post('/p', async (request) => {
      const first = await request.db.begin(async (tx) => {
        await tx`insert into ledger (note) values ('one')`
        const [r] = await tx`select current_setting('app.a', true) as a, current_setting('app.b', true) as b`
        return r
      })
      await request.db.begin(async (tx) => tx`insert into ledger (note) values ('two')`)
      return { first }
    })
    const res = await app.inject({ method: 'POST', url: '/p' })
    expect(res.statusCode, res.body).toBe(200)
    expect(res.json()).toEqual({ first: { a: '1', b: '2' } })
    expect(await db.sql`select note from ledger order by id`).toEqual([{ note: 'one' }, { note: 'two' }])
  })

  test("onLease's block COMMIT fails (deferred constraint): 500, handler block never runs, pool idle", async () => {
    await db.sql.unsafe(
      'create table if not exists dc (code text, constraint u unique (code) deferrable initially deferred)',
    )
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onLease: (async (_request: unknown, sql: Sql) => {
          await sql.begin(async (tx) => tx`insert into dc (code) values ('a'), ('a')`)
        }) as never,
      },
    )
    const { app } = current
    app.post('/p', async (request) => {
      await request.db.begin(async (tx) => tx`insert into ledger (note) values ('handler')`)
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/p' })
    expect(res.statusCode, res.body).toBe(500)
    expect(await db.sql`select note from ledger`).toEqual([])
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 2_000)).toBe(true)
    expect(unhandled).toEqual([])
  })

  test('abort (handlerTimeout) while onLease runs its block, the handler begin()s first: lease back, nothing runs', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onLease: (async (_request: unknown, sql: Sql) => {
          await sql.begin(async (tx) => tx`select pg_sleep(1)`)
        }) as never,
      },
    )
    const { app, applicationName } = current
    app.post('/p', { handlerTimeout: 200 }, async (request) => {
      await request.db.begin(async (tx) => tx`insert into ledger (note) values ('late')`)
      return { ok: true }
    })
    const started = Date.now()
    const res = await app.inject({ method: 'POST', url: '/p' })
    expect(res.statusCode).toBeGreaterThanOrEqual(500)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 1_000)).toBe(true)
    expect(Date.now() - started).toBeLessThan(1_000)
    await sleep(1_200)
    expect(await db.sql`select note from ledger`).toEqual([])
    expect(await db.running(applicationName, '%pg_sleep%')).toBe(0)
    expect(unhandled).toEqual([])
  })
})

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../support/database.js'

// Found by a second round of hostile probing (each failed on 1c7775f, the control passed): onLease
// could not open a block of its own when the handler's first use was begin() (500
// NESTED_TRANSACTION); a begin() whose BEGIN failed left the lease 'in a block' (a second begin()
// was refused); and a holder's query.cancel() did nothing once its statement had been sent again
// after a failed session reset (it ran its 3 s to the end).

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
beforeEach(async () => {
  await db.sql`truncate ledger`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

type Sql = ((strings: TemplateStringsArray, ...values: unknown[]) => Promise<Record<string, unknown>[]>) & {
  begin: (fn: (tx: Sql) => Promise<unknown>) => Promise<unknown>
}

describe('onLease and begin()', () => {
  test("onLease opens a block of its own; the handler's first use is begin()", async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onLease: (async (_request: unknown, sql: Sql) => {
          await sql.begin(async (tx) => tx`select set_config('app.tenant_id', '9', false)`)
        }) as never,
      },
    )
    const { app } = current
    app.get('/s', async (request) => {
      const row = await request.db.begin(async (tx) => {
        const [r] = await tx`select current_setting('app.tenant_id', true) as t`
        return r
      })
      return row
    })
    const res = await app.inject('/s')
    expect(res.statusCode, res.body).toBe(200)
    expect(res.json()).toEqual({ t: '9' })
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 2_000)).toBe(true)
  })

  test('a begin() whose BEGIN fails: the request can open another block afterwards', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    app.post('/b', async (request) => {
      let first: unknown
      try {
        await request.db.begin('isolation level bogus', async (tx) => tx`select 1`)
      } catch (error) {
        first = (error as { code?: string }).code
      }
      await request.db.begin(async (tx) => tx`insert into ledger (note) values ('second block')`)
      return { first }
    })
    const res = await app.inject({ method: 'POST', url: '/b' })
    expect(res.statusCode, res.body).toBe(200)
    expect(await db.sql`select note from ledger`).toEqual([{ note: 'second block' }])
  })
})

describe('cancel after a reroute', () => {
  test.each([
    ['after A left a SQL-level PREPARE (the reset fails; B is rerouted)', true],
    ['control: without A', false],
  ])('a statement can be cancelled by its holder: %s', async (_, withA) => {
    current = await coreApp(db.url, { max: 1 })
    const { app, applicationName } = current
    app.post('/a', async (request) => {
      await request.db.unsafe('prepare leaked as select 1')
      return { ok: true }
    })
    app.post('/b', async (request) => {
      const q = request.db`select pg_sleep(3) as slept`
      const p = Promise.allSettled([q])
      const started = Date.now()
      await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(3)%')) === 1, 'the sleep runs', 2_000)
      q.cancel()
      const [r] = await p
      return {
        status: r?.status,
        code: r?.status === 'rejected' ? (r.reason as { code?: string }).code : undefined,
        ms: Date.now() - started,
      }
    })
    // One connection only: A leaves PREPARE on it; B's statement goes behind the failed reset.
    if (withA) {
      const a = await app.inject({ method: 'POST', url: '/a' })
      expect(a.statusCode).toBe(200)
    }
    const b = await app.inject({ method: 'POST', url: '/b' })
    expect(b.statusCode, b.body).toBe(200)
    const body = b.json() as { status: string; code: string; ms: number }
    expect(body.status).toBe('rejected')
    expect(body.code).toBe('57014')
    expect(body.ms).toBeLessThan(2_000)
  })
})

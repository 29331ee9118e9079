import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing (failed on 57373f9): when a handler's first use of the database was
// `request.db.begin(...)`, the block's BEGIN went out right behind onLease's first statement, so
// onLease's later statements ran inside the handler's block, and a rollback of the block undid
// the context onLease had set (the tenant of the README's row-level-security pattern).

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe("create table tenants (slug text primary key, id int); insert into tenants values ('acme', 7)")
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

type Sql = (strings: TemplateStringsArray, ...values: unknown[]) => Promise<Record<string, unknown>[]>

// A lookup, then the context: onLease with more than one statement.
const onLease = async (request: { headers: Record<string, unknown> }, sql: Sql) => {
  const [tenant] = await sql`select id from tenants where slug = ${String(request.headers['x-tenant'])}`
  await sql`select set_config('app.tenant_id', ${String(tenant?.id)}, false)`
}

describe("onLease runs before the handler's first statement, a begin() block's BEGIN included", () => {
  test('a first begin() that rolls back keeps the tenant onLease set', async () => {
    current = await coreApp(db.url, { max: 1 }, {}, { onLease: onLease as never })
    const { app } = current
    app.get('/t', async (request) => {
      let inside: unknown
      try {
        await request.db.begin(async (tx) => {
          const [row] = await tx<{ t: string }[]>`select current_setting('app.tenant_id', true) as t`
          inside = row?.t
          throw new Error('validation failed')
        })
      } catch {}
      const [row] = await request.db<{ t: string }[]>`select current_setting('app.tenant_id', true) as t`
      return { inside, after: row?.t }
    })
    const res = await app.inject({ url: '/t', headers: { 'x-tenant': 'acme' } })
    expect(res.statusCode, res.body).toBe(200)
    expect(res.json()).toEqual({ inside: '7', after: '7' })
  })

  test("onLease's statements do not run inside the handler's block", async () => {
    const inBlock: unknown[] = []
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onLease: (async (request: { headers: Record<string, unknown> }, sql: Sql) => {
          await onLease(request, sql)
          // Inside the handler's block it would run serializable.
          const [row] = await sql`select current_setting('transaction_isolation') as isolation`
          inBlock.push(row?.isolation)
        }) as never,
      },
    )
    const { app } = current
    app.get('/o', async (request) => {
      await request.db.begin('isolation level serializable', async (tx) => tx`select 1`)
      return { ok: true }
    })
    const res = await app.inject({ url: '/o', headers: { 'x-tenant': 'acme' } })
    expect(res.statusCode, res.body).toBe(200)
    expect(inBlock).toEqual(['read committed'])
  })

  test('onLease may open a block of its own; the handler runs after it', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onLease: (async (
          _request: unknown,
          sql: Sql & { begin: (fn: (tx: Sql) => Promise<unknown>) => Promise<unknown> },
        ) => {
          await sql.begin(async (tx) => tx`select set_config('app.tenant_id', '9', false)`)
        }) as never,
      },
    )
    const { app } = current
    app.get('/s', async (request) => {
      const [row] = await request.db`select current_setting('app.tenant_id', true) as t`
      return row
    })
    const res = await app.inject('/s')
    expect(res.statusCode, res.body).toBe(200)
    expect(res.json()).toEqual({ t: '9' })
  })
})

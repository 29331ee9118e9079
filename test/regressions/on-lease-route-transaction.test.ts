import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// onLease runs inside a route transaction: a begin() of its own there is nested, and refused with
// the coded FST_PG_POOL_NESTED_TRANSACTION (the README said the hook may open a block of its own,
// without that limit; a third round of hostile probing found the mismatch, now documented).

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

type Sql = ((strings: TemplateStringsArray, ...values: unknown[]) => Promise<Record<string, unknown>[]>) & {
  begin: (fn: (tx: Sql) => Promise<unknown>) => Promise<unknown>
}

describe('onLease that opens a block, on other kinds of routes', () => {
  test.each([
    ['a route transaction (onLease runs inside it): refused with a coded 500', { transaction: true }, 500],
    ['a plain route: the request is served', undefined, 200],
  ])('%s', async (_, config, status) => {
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
    app.post('/p', { config: config === undefined ? {} : { db: config } }, async (request) => {
      const [r] = await request.db`select current_setting('app.tenant_id', true) as t`
      return r
    })
    const res = await app.inject({ method: 'POST', url: '/p' })
    expect(res.statusCode, res.body).toBe(status)
    expect(res.json()).toEqual(
      status === 200 ? { t: '9' } : expect.objectContaining({ code: 'FST_PG_POOL_NESTED_TRANSACTION' }),
    )
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 2_000)).toBe(true)
  })
})

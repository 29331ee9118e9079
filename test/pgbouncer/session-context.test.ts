import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Runs in the PgBouncer leg: per-request session context behind a transaction-mode pooler,
// where only transaction-local settings are safe (docs/pgbouncer-and-sizing.md).
let db: TestDatabase
let current: TestApp
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table doc (tenant text not null, body text not null)`
  await db.sql`insert into doc values ('a', 'a1'), ('a', 'a2'), ('b', 'b1')`
  current = await coreApp(
    db.url,
    { max: 2, maxWaiting: 100 },
    {},
    {
      onLease: async (request, sql) => {
        await sql`select set_config('app.tenant', ${String(request.headers['x-tenant'])}, true)`
      },
    },
  )
  current.app.get('/docs', { config: { db: { transaction: true } } }, async (request) => {
    await new Promise((resolve) => setTimeout(resolve, Math.random() * 5))
    return request.db<{ body: string }[]>`
      select body from doc where tenant = current_setting('app.tenant') order by body`
  })
})
afterAll(async () => {
  await current?.app.close()
  await db?.drop()
})

describe('session context through PgBouncer in transaction mode', () => {
  test('set_config(..., true) in onLease scopes 60 interleaved requests to their own tenant', async () => {
    expect(db.viaBouncer).toBe(true)
    const tenants = Array.from({ length: 60 }, (_, i) => (i % 3 === 0 ? 'b' : 'a'))
    const replies = await Promise.all(
      tenants.map((tenant) => current.app.inject({ url: '/docs', headers: { 'x-tenant': tenant } })),
    )
    replies.forEach((reply, i) => {
      expect(reply.statusCode).toBe(200)
      const bodies = (reply.json() as { body: string }[]).map((row) => row.body)
      expect(bodies).toEqual(tenants[i] === 'a' ? ['a1', 'a2'] : ['b1'])
    })
  })
})

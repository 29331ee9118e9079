// Round thirteen, probe-decoding (documented, not fixed): postgres.js prepares each statement text
// once per connection and keeps it across requests (the session reset keeps them: they are what
// makes it fast). Where requests resolve one text to different tables (a schema per tenant chosen by
// search_path in onLease; a request's temp table shadowing a table), the next request's statement
// keeps the first one's parameter types, or fails 0A000 "cached plan must not change result type"
// inside a transaction. The core README ("What it does not reset") says so and gives the remedy,
// `prepare: false` (or qualified names): these tests hold the README to both. The helper's defect
// file failed on 80ec26f on each of the three cases with the default (prepared) connection.
// DEFECT found on the way (failed on 83cfa42, the three prepare-false cases: same 500s and row): a
// URL's `?prepare=false` was silently ignored; the pool set `prepare: true` itself, and postgres.js
// reads the query only when the option is absent.
import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
let current: TestApp | undefined

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create schema tenant_a; create schema tenant_b;
    create table tenant_a.items (id int primary key, name text, code text);
    create table tenant_b.items (id int primary key, name int, code char(4));
    insert into tenant_a.items values (1, 'a-one', 'ab');
    insert into tenant_b.items values (1, 11, 'ab')`)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop()
})

/** With `?prepare=false` (postgres.js's `prepare: false`), the core README's advice for this. */
const unprepared = () => `${db.url}${db.url.includes('?') ? '&' : '?'}prepare=false`

async function tenantApp(url = unprepared()): Promise<FastifyInstance> {
  current = await coreApp(
    url,
    { max: 1 },
    {},
    {
      onLease: async (request, sql) => {
        await sql`select pg_catalog.set_config('search_path', ${String(request.headers['x-tenant'])}, false)`
      },
    },
  )
  const { app } = current
  app.get('/item', { config: { db: { transaction: true } } }, async (request) => {
    const [row] = await request.db`select name from items where id = ${1}`
    return row ?? {}
  })
  app.get('/code', async (request) => request.db`select id from items where code = ${'ab  '}`)
  app.get('/pid', async (request) => (await request.db`select pg_catalog.pg_backend_pid() as pid`)[0])
  return app
}

const as = (tenant: string, url: string) => ({ url, headers: { 'x-tenant': tenant } })

test('documented: with prepared statements (the default), tenant B fails after tenant A ran the same text', async () => {
  const app = await tenantApp(db.url)
  expect((await app.inject(as('tenant_a', '/item'))).json()).toEqual({ name: 'a-one' })
  const b = await app.inject(as('tenant_b', '/item'))
  expect({ status: b.statusCode, code: b.json().code }).toEqual({ status: 500, code: '0A000' })
})

test('prepare: false: a transaction route of tenant B after tenant A ran the same text on the connection', async () => {
  const app = await tenantApp()
  const pid = (await app.inject(as('tenant_a', '/pid'))).json()
  const a = await app.inject(as('tenant_a', '/item'))
  expect(a.json()).toEqual({ name: 'a-one' })
  const b = await app.inject(as('tenant_b', '/item'))
  // Still the one connection: B's answer comes from the session A left behind.
  expect((await app.inject(as('tenant_b', '/pid'))).json()).toEqual(pid)
  expect({ status: b.statusCode, body: b.json() }).toEqual({ status: 200, body: { name: 11 } })
})

test("prepare: false: tenant A's text comparison keeps its own parameter type after tenant B's char(4)", async () => {
  // On a connection only tenant_a used: 'ab  ' is not 'ab' in a text column.
  let app = await tenantApp()
  expect((await app.inject(as('tenant_a', '/code'))).json()).toEqual([])
  await current?.app.close()
  // Tenant B first (its code column is char(4)), then tenant A on the same connection.
  app = await tenantApp()
  expect((await app.inject(as('tenant_b', '/code'))).json()).toEqual([{ id: 1 }])
  const a = await app.inject(as('tenant_a', '/code'))
  expect(a.statusCode).toBe(200)
  expect(a.json()).toEqual([])
})

test('prepare: false: a temp table a request created (dropped by the reset) does not fail the next transaction route', async () => {
  current = await coreApp(unprepared(), { max: 1 })
  const { app } = current
  await db.sql`create table if not exists public.items (id int primary key, name text)`
  await db.sql`insert into public.items values (1, 'public-one') on conflict do nothing`
  app.post('/scratch-read', async (request) => {
    await request.db`create temp table if not exists items (id int, name int)`
    return (await request.db`select name from items where id = ${1}`)[0] ?? {}
  })
  app.get('/public', { config: { db: { transaction: true } } }, async (request) => {
    const [row] = await request.db`select name from items where id = ${1}`
    return row ?? {}
  })
  expect((await app.inject({ method: 'POST', url: '/scratch-read' })).statusCode).toBe(200)
  const b = await app.inject('/public')
  expect({ status: b.statusCode, body: b.json() }).toEqual({ status: 200, body: { name: 'public-one' } })
})

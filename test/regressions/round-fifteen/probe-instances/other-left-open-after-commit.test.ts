import pgPoolCore, { type RequestDb } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor } from '../../../support/database.js'

// What the user does: a route transaction on the default instance (`config.db.transaction`) that
// also writes on a named instance through request.dbs.<name>, where the handler opened a block in
// SQL (`begin`) and forgot to end it (code moved over from pg's client.query('BEGIN')).
// What they should get: the core's promise for that case, a 500 FST_PG_POOL_COMMIT_FAILED (the
// billing write is rolled back), and never a 5xx for the route's own transaction once it committed:
// the route's work must then be rolled back too (nothing committed behind a 500 that says
// "rolled back"), so that a client that retries does not do the orders twice.
// What they got: the route transaction's COMMIT runs while the named instance's block is being
// asked about: the orders row is committed, and the reply is the 500 COMMIT_FAILED anyway.

let orders: TestDatabase
let billing: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  orders = await createTestDatabase()
  billing = await createTestDatabase()
  await orders.sql`create table orders (id serial primary key, note text)`
  await billing.sql`create table invoices (id serial primary key, note text)`
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(async () => {
  await orders.drop()
  await billing.drop()
})

test('a route transaction with a SQL block left open on request.dbs.<name>: a 500 never rides on committed work', async () => {
  app = Fastify()
  await app.register(pgPoolCore, { connection: orders.url, pool: { max: 2 } })
  await app.register(pgPoolCore, { name: 'billing', connection: billing.url, pool: { max: 2 } })
  app.post('/checkout', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into orders (note) values ('order')`
    const invoices = (request.dbs as Record<string, RequestDb>).billing as RequestDb
    await invoices`begin`
    await invoices`insert into invoices (note) values ('invoice')`
    return { ok: true }
  })
  const res = await app.inject({ method: 'POST', url: '/checkout' })
  expect(await waitFor(() => app?.pgPools.all().every((view) => view.stats().leased === 0) ?? false)).toBe(true)
  const [ordered] = await orders.sql<{ n: number }[]>`select count(*)::int as n from orders`
  const [invoiced] = await billing.sql<{ n: number }[]>`select count(*)::int as n from invoices`
  const outcome = { status: res.statusCode, code: res.json().code, orders: ordered?.n, invoices: invoiced?.n }
  // A 500 that says "rolled back" must not leave the order committed (a retry would order twice).
  expect(outcome).toEqual({ status: 500, code: 'FST_PG_POOL_COMMIT_FAILED', orders: 0, invoices: 0 })
})

test('a block left open on request.dbs.<name> that wrote nothing: the route transaction commits, 200', async () => {
  app = Fastify()
  await app.register(pgPoolCore, { connection: orders.url, pool: { max: 2 } })
  await app.register(pgPoolCore, { name: 'billing', connection: billing.url, pool: { max: 2 } })
  app.post('/chained', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into orders (note) values ('chained')`
    const invoices = (request.dbs as Record<string, RequestDb>).billing as RequestDb
    await invoices`begin`
    await invoices`insert into invoices (note) values ('chained')`
    // What COMMIT AND CHAIN leaves: the write committed, an empty block open.
    await invoices`commit and chain`
    return { ok: true }
  })
  const res = await app.inject({ method: 'POST', url: '/chained' })
  expect(await waitFor(() => app?.pgPools.all().every((view) => view.stats().leased === 0) ?? false)).toBe(true)
  const [ordered] = await orders.sql<{ n: number }[]>`select count(*)::int as n from orders where note = 'chained'`
  const [invoiced] = await billing.sql<{ n: number }[]>`select count(*)::int as n from invoices where note = 'chained'`
  expect({ status: res.statusCode, orders: ordered?.n, invoices: invoiced?.n }).toEqual({
    status: 200,
    orders: 1,
    invoices: 1,
  })
})

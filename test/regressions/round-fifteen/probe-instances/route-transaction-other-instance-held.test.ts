import pgPoolCore, { type RequestDb } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor } from '../../../support/database.js'

// What the user does: a route transaction (`config.db.transaction`) on the default instance that
// also writes on a second database through request.dbs.<name>, and answers 409 (or throws).
// What they get (held, and now said in the umbrella README's "A second database"): the route's
// transaction is request.db's only. The other instance's statements commit one by one, as on a
// route without a transaction (a begin() block there commits when its callback resolves): the 409
// rolls the orders row back and keeps the invoice row. Nothing makes two databases commit as one.

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

async function counts(note: string) {
  expect(await waitFor(() => app?.pgPools.all().every((view) => view.stats().leased === 0) ?? false)).toBe(true)
  const [ordered] = await orders.sql<{ n: number }[]>`select count(*)::int as n from orders where note = ${note}`
  const [invoiced] = await billing.sql<{ n: number }[]>`select count(*)::int as n from invoices where note = ${note}`
  return { orders: ordered?.n, invoices: invoiced?.n }
}

test("a 409 rolls back the route's transaction only: request.dbs.<name>'s write is committed on its own", async () => {
  app = Fastify()
  await app.register(pgPoolCore, { connection: orders.url })
  await app.register(pgPoolCore, { name: 'billing', connection: billing.url })
  app.post('/conflict', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into orders (note) values ('conflict')`
    await ((request.dbs as Record<string, RequestDb>)
      .billing as RequestDb)`insert into invoices (note) values ('conflict')`
    return reply.code(409).send({ conflict: true })
  })
  app.post('/blocked', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into orders (note) values ('blocked')`
    await ((request.dbs as Record<string, RequestDb>).billing as RequestDb).begin(async (tx) => {
      await tx`insert into invoices (note) values ('blocked')`
    })
    return reply.code(200).send({ ok: true })
  })
  expect((await app.inject({ method: 'POST', url: '/conflict' })).statusCode).toBe(409)
  expect(await counts('conflict')).toEqual({ orders: 0, invoices: 1 })
  expect((await app.inject({ method: 'POST', url: '/blocked' })).statusCode).toBe(200)
  expect(await counts('blocked')).toEqual({ orders: 1, invoices: 1 })
})

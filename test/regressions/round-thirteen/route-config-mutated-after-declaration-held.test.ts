// HELD (probe-options): a route's `config.db` object read once, when the route is declared. The
// app's code changing that object later (turning `transaction` on or off, `readOnly`, `pipeline`
// with a transaction, an unknown key) changes nothing: the route keeps what it was declared with,
// and no request fails for the later values. Also: a `config.db` whose keys are getters (an
// object built by a config layer) is read as it reads at declaration.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
let app: FastifyInstance
const plain: Record<string, unknown> = { transaction: false }
const transactional: Record<string, unknown> = { transaction: true }
let reads = 0
const withGetter = {
  get transaction() {
    reads++
    return reads === 1
  },
}

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table items (id serial primary key, v text)`
  app = Fastify()
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 2 } })
  const failAfterInsert = (v: string) => async (request: FastifyRequest) => {
    await request.db`insert into items (v) values (${v})`
    throw Object.assign(new Error('after the insert'), { statusCode: 400 })
  }
  app.post('/plain', { config: { db: plain as never } }, failAfterInsert('plain'))
  app.post('/tx', { config: { db: transactional as never } }, failAfterInsert('tx'))
  app.post('/getter', { config: { db: withGetter as never } }, failAfterInsert('getter'))
  await app.ready()
})
afterAll(async () => {
  await app?.close()
  await db?.drop()
})

async function kept(v: string): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from items where v = ${v}`
  return row?.n ?? 0
}

test('config.db changed after declaration changes nothing', async () => {
  plain.transaction = true
  plain.readOnly = true
  transactional.transaction = false
  transactional.pipeline = true
  transactional.bogus = 1
  const [a, b, c] = await Promise.all([
    app.inject({ method: 'POST', url: '/plain' }),
    app.inject({ method: 'POST', url: '/tx' }),
    app.inject({ method: 'POST', url: '/getter' }),
  ])
  expect([a.statusCode, b.statusCode, c.statusCode]).toEqual([400, 400, 400])
  // /plain kept its insert (no transaction, not read-only); /tx rolled its back; /getter was a
  // transaction (its getter said true when the route was declared).
  expect({ plain: await kept('plain'), tx: await kept('tx'), getter: await kept('getter') }).toEqual({
    plain: 1,
    tx: 0,
    getter: 0,
  })
})

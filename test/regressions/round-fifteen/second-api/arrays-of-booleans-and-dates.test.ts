import fastifyPostgres from '@fastify/postgres'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

// What the user does: moves routes that pass a JS array of booleans, Dates or BigInts as one
// parameter (`where active = any($1)`, an insert into a boolean[] or date[] column) from
// @fastify/postgres to fastify-pg-pool, as the guide maps it ("JS arrays go as PostgreSQL arrays
// with both (`where id = any(${ids})`)").
// What they should get: what pg gave: the rows, the stored arrays.
// What they got: postgres.js 3.4.9 types such a parameter as its first element's type (boolean,
// timestamptz, int8), not as an array: the server refuses the statement (42804 "is of type
// boolean[] but expression is of type boolean", 42809 "op ANY/ALL (array) requires array on right
// side"), a 500, where an array of strings or numbers (sent untyped) works.

let db: TestDatabase
let pgApp: FastifyInstance
let poolApp: FastifyInstance

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table items (id int8 primary key, active boolean, flags boolean[], days date[])`
  await db.sql`insert into items (id, active) values (1, true), (2, false), (3, null)`
  const flags = [true, false]
  const days = [new Date('2024-01-15T00:00:00Z')]
  pgApp = Fastify()
  await pgApp.register(fastifyPostgres, { connectionString: db.directUrl })
  pgApp.get('/active', async () => {
    const { rows } = await pgApp.pg.query('SELECT count(*)::int AS n FROM items WHERE active = ANY($1)', [flags])
    return rows[0]
  })
  pgApp.get('/ids', async () => {
    const { rows } = await pgApp.pg.query('SELECT count(*)::int AS n FROM items WHERE id = ANY($1)', [
      [1n, 2n] as unknown as string,
    ])
    return rows[0]
  })
  pgApp.post('/items/:id', async (req) => {
    const { rows } = await pgApp.pg.query(
      'INSERT INTO items (id, flags, days) VALUES ($1, $2, $3) RETURNING flags, days::text[] AS days',
      [(req.params as { id: string }).id, flags, days],
    )
    return rows[0]
  })
  poolApp = Fastify()
  await poolApp.register(pgPool, { connection: db.url })
  poolApp.get('/active', async (request) => {
    const [row] = await request.db`select count(*)::int as n from items where active = any(${flags})`
    return row
  })
  poolApp.get('/ids', async (request) => {
    const [row] =
      await request.db`select count(*)::int as n from items where id = any(${[1n, 2n] as unknown as string[]})`
    return row
  })
  poolApp.post('/items/:id', async (request) => {
    const [row] = await request.db`
      insert into items (id, flags, days) values (${(request.params as { id: string }).id}, ${flags}, ${days})
      returning flags, days::text[] as days`
    return row
  })
  await Promise.all([pgApp.ready(), poolApp.ready()])
})
afterAll(async () => {
  await Promise.all([pgApp?.close(), poolApp?.close()])
  await db?.drop()
})

test('an array of booleans, Dates or BigInts as a parameter answers as with @fastify/postgres', async () => {
  for (const [method, url, again] of [
    ['GET', '/active', '/active'],
    ['GET', '/ids', '/ids'],
    ['POST', '/items/10', '/items/11'],
  ] as const) {
    const before = await pgApp.inject({ method, url })
    expect(before.statusCode, `pg ${url}: ${before.body}`).toBe(200)
    const after = await poolApp.inject({ method, url: again })
    expect({ status: after.statusCode, body: after.json() }, url).toEqual({ status: 200, body: before.json() })
  }
})

test('in code too, and through unsafe()', async () => {
  const [row] = await poolApp.db`select ${[true, false]}::bool[] as typed, ${true} = any(${[true]}) as found`
  expect(row).toEqual({ typed: [true, false], found: true })
  const [viaUnsafe] = await poolApp.db.unsafe('select count(*)::int as n from items where active = any($1)', [[false]])
  expect(viaUnsafe).toEqual({ n: 1 })
})

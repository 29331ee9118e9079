import fastifyPostgres from '@fastify/postgres'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

// What the user does: reads an array column one of whose values has a lower bound other than 1
// (what `update posts set tags[0] = 'pinned'` makes of an ordinary array, or `array_fill(0,
// array[2], array[0])`), moving from @fastify/postgres to fastify-pg-pool; then writes it back.
// What they should get: what pg gives: the elements, ['pinned', 'a', null] (the server writes
// such a value with its bounds first: `[0:2]={pinned,a,NULL}`), and a one-dimensional array again
// when written back.
// What they got: the pool's copy of postgres.js's array parser reads the bounds as text before a
// nested array: [['pinned', 'a', null]], one level too deep; written back, the column holds a
// two-dimensional array, silently.

let db: TestDatabase
let pgApp: FastifyInstance
let poolApp: FastifyInstance
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table posts (id int primary key, tags text[], scores int[])`
  await db.sql`insert into posts values (1, array['a', null], array[1, 2]), (2, null, null)`
  await db.sql`update posts set tags[0] = 'pinned', scores[-1] = 7 where id = 1`
  pgApp = Fastify()
  await pgApp.register(fastifyPostgres, { connectionString: db.directUrl })
  pgApp.get('/posts/1', async () => (await pgApp.pg.query('SELECT tags, scores FROM posts WHERE id = 1')).rows[0])
  poolApp = Fastify()
  await poolApp.register(pgPool, { connection: db.url })
  poolApp.get('/posts/1', async (request) => (await request.db`select tags, scores from posts where id = 1`)[0])
  await Promise.all([pgApp.ready(), poolApp.ready()])
})
afterAll(async () => {
  await Promise.all([pgApp?.close(), poolApp?.close()])
  await db?.drop()
})

test('an array with bounds other than 1 reads as its elements, as with @fastify/postgres', async () => {
  const before = await pgApp.inject('/posts/1')
  expect(before.json()).toEqual({ tags: ['pinned', 'a', null], scores: [7, null, 1, 2] })
  const after = await poolApp.inject('/posts/1')
  expect({ status: after.statusCode, body: after.json() }).toEqual({ status: 200, body: before.json() })
})

test('read and written back, it stays one-dimensional; two dimensions with bounds read too', async () => {
  const [post] = await poolApp.db`select tags from posts where id = 1`
  await poolApp.db`update posts set tags = ${post?.tags as string[]} where id = 2`
  const [copy] = await db.sql`select array_ndims(tags) as dims, tags::text as text from posts where id = 2`
  expect(copy).toEqual({ dims: 1, text: '{pinned,a,NULL}' })
  const [grid] = await poolApp.db`select '[0:1][2:3]={{1,2},{NULL,4}}'::int[] as grid, '[5:5]={"x,y"}'::text[] as one`
  expect(grid).toEqual({
    grid: [
      [1, 2],
      [null, 4],
    ],
    one: ['x,y'],
  })
})

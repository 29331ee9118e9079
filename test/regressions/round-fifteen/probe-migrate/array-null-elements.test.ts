import fastifyPostgres from '@fastify/postgres'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

// What the user does: moves a route that returns an array column with NULL elements (tags of
// which some are unknown, a nullable int[] or boolean[], a jsonb[]) from @fastify/postgres to
// fastify-pg-pool.
// What they should get: null for each NULL element, as pg gives (and as the stored value is).
// What they got: the pool's copy of postgres.js's array parser read an unquoted NULL as the
// text "NULL": `text[]` gave the string 'NULL' (indistinguishable from a stored 'NULL', and
// written back as one), `int[]` NaN, `boolean[]` false, `date[]` an Invalid Date, and a `jsonb[]`
// with a NULL failed the whole statement (a 500: "NULL" is not valid JSON).

let db: TestDatabase
let pgApp: FastifyInstance
let poolApp: FastifyInstance
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table posts (id int primary key, tags text[], scores int[], flags boolean[], docs jsonb[])`
  await db.sql`insert into posts values (1, array['a', null, 'NULL'], array[1, null], array[true, null], array['{"a":1}'::jsonb, null])`
  pgApp = Fastify()
  await pgApp.register(fastifyPostgres, { connectionString: db.directUrl })
  pgApp.get('/posts/:id', async (req) => {
    const { rows } = await pgApp.pg.query('SELECT tags, scores, flags, docs FROM posts WHERE id = $1', [
      (req.params as { id: string }).id,
    ])
    return rows[0]
  })
  poolApp = Fastify()
  await poolApp.register(pgPool, { connection: db.url })
  poolApp.get('/posts/:id', async (request) => {
    const [post] =
      await request.db`select tags, scores, flags, docs from posts where id = ${(request.params as { id: string }).id}`
    return post
  })
  await pgApp.ready()
  await poolApp.ready()
})
afterAll(async () => {
  await pgApp?.close()
  await poolApp?.close()
  await db?.drop()
})

describe('NULL elements of arrays read as null', () => {
  test('a route answers the same arrays as with @fastify/postgres', async () => {
    const before = await pgApp.inject('/posts/1')
    expect(before.json()).toEqual({
      tags: ['a', null, 'NULL'],
      scores: [1, null],
      flags: [true, null],
      docs: [{ a: 1 }, null],
    })
    const after = await poolApp.inject('/posts/1')
    expect({ status: after.statusCode, body: after.json() }).toEqual({ status: 200, body: before.json() })
  })

  test('in code: null, not the text NULL, NaN, false or an Invalid Date; nested arrays too', async () => {
    const [row] = await poolApp.db`
      select array['a', null]::text[] as tags, array[1, null]::int[] as scores, array[true, null] as flags,
        array['2024-01-15'::date, null] as days, array[[1, null], [null, 2]] as grid, array[null]::int8[] as big,
        array['NULL', 'null', '']::text[] as texts`
    expect(row?.tags).toEqual(['a', null])
    expect(row?.scores).toEqual([1, null])
    expect(row?.flags).toEqual([true, null])
    expect((row?.days as unknown[] | undefined)?.[1]).toBeNull()
    expect(row?.grid).toEqual([
      [1, null],
      [null, 2],
    ])
    expect(row?.big).toEqual([null])
    // Stored text that reads NULL is quoted by the server: it stays text.
    expect(row?.texts).toEqual(['NULL', 'null', ''])
  })

  test('read and written back, a NULL element stays NULL', async () => {
    const [post] = await poolApp.db`select tags from posts where id = 1`
    await poolApp.db`insert into posts (id, tags) values (2, ${post?.tags as string[]})`
    const [copy] = await db.sql`select tags[2] is null as second_null, tags[3] as third from posts where id = 2`
    expect(copy).toEqual({ second_null: true, third: 'NULL' })
  })
})

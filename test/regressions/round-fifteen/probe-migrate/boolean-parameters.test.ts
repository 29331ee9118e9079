import fastifyPostgres from '@fastify/postgres'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

// What the user does: moves a route that writes a boolean column from a query-string or form
// value (`?active=true`: a string) from @fastify/postgres to fastify-pg-pool, as the guide maps
// it (a tagged template, or unsafe(text, values) for the $1 SQL they have).
// What they should get: what pg wrote: the server reads the text ('true', 't', 'yes', '1', 1 are
// true; 'false', '0' false; anything else is refused, a 400), and `true`/`false` stay themselves.
// What they got: postgres.js 3.4.9's boolean serializer sends every value but `true` as false:
// `?active=true` stored false with a 200, silently; so did 1, 'yes' and 'garbage'.

let db: TestDatabase
let pgApp: FastifyInstance
let poolApp: FastifyInstance
let unsafeApp: FastifyInstance

interface Flag {
  Params: { id: string }
  Querystring: { active: string }
}

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table users (id int primary key, active boolean)`
  await db.sql`insert into users select g, null from generate_series(1, 30) g`
  pgApp = Fastify()
  await pgApp.register(fastifyPostgres, { connectionString: db.directUrl })
  pgApp.post<Flag>('/users/:id/active', async (req) => {
    const { rows } = await pgApp.pg.query('UPDATE users SET active = $1 WHERE id = $2 RETURNING active', [
      req.query.active,
      req.params.id,
    ])
    return rows[0]
  })
  poolApp = Fastify()
  await poolApp.register(pgPool, { connection: db.url })
  poolApp.post<Flag>('/users/:id/active', async (request) => {
    const [user] = await request.db`
      update users set active = ${request.query.active} where id = ${request.params.id} returning active`
    return user
  })
  unsafeApp = Fastify()
  await unsafeApp.register(pgPool, { connection: db.url })
  unsafeApp.post<Flag>('/users/:id/active', async (request) => {
    const [user] = await request.db.unsafe('UPDATE users SET active = $1 WHERE id = $2 RETURNING active', [
      request.query.active,
      request.params.id,
    ])
    return user
  })
  await Promise.all([pgApp.ready(), poolApp.ready(), unsafeApp.ready()])
})
afterAll(async () => {
  await Promise.all([pgApp?.close(), poolApp?.close(), unsafeApp?.close()])
  await db?.drop()
})

async function set(app: FastifyInstance, id: number, active: string) {
  const response = await app.inject({ method: 'POST', url: `/users/${id}/active?active=${active}` })
  const [row] = await db.sql`select active from users where id = ${id}`
  return { status: response.statusCode, stored: row?.active }
}

describe('a boolean parameter given as text', () => {
  test('a query-string value is stored as with @fastify/postgres', async () => {
    let id = 0
    for (const active of ['true', 'false', 't', 'yes', '1', '0', 'off']) {
      const before = await set(pgApp, ++id, active)
      expect(before.status, `pg, ${active}`).toBe(200)
      for (const app of [poolApp, unsafeApp]) {
        expect(await set(app, ++id, active), `fastify-pg-pool, ${active}`).toEqual(before)
      }
    }
  })

  test('text the server cannot read as a boolean is refused (400), never stored as false', async () => {
    expect((await set(pgApp, 25, 'garbage')).status).toBe(500) // pg: the server's message
    for (const app of [poolApp, unsafeApp]) expect(await set(app, 26, 'garbage')).toEqual({ status: 400, stored: null })
  })

  test('true, false and numbers', async () => {
    const [row] = await poolApp.db`
      select ${true}::bool as t, ${false}::bool as f, ${1}::bool as one, ${0}::bool as zero`
    expect(row).toEqual({ t: true, f: false, one: true, zero: false })
  })
})

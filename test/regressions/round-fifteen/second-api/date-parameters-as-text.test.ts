import fastifyPostgres from '@fastify/postgres'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

// What the user does: moves a route that writes a date and a timestamptz column from a query
// string or form value (`?day=2024-02-30`: a string) from @fastify/postgres to fastify-pg-pool, as
// the guide maps it (a tagged template).
// What they should get: what pg wrote: the server reads the text, or refuses it (a 400), as this
// round's fix does for a boolean given as text (ac5b448).
// What they got: postgres.js's date serializer (oids 1082, 1114, 1184) reads any value that is not
// a Date with JavaScript's lenient `new Date(text)` and sends its toISOString(): '2024-02-30' was
// stored as 2024-03-01, '42' as 2042-01-01, 'garbage-0' as 2000-01-01, 'May 5' as 2001-05-05, all
// with a 200, silently; 'infinity', which the server takes, failed with a 500 (RangeError).

let db: TestDatabase
let pgApp: FastifyInstance
let poolApp: FastifyInstance

interface Day {
  Params: { id: string }
  Querystring: { day: string }
}

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table bookings (id int primary key, day date, at timestamptz)`
  await db.sql`insert into bookings select g, null, null from generate_series(1, 40) g`
  pgApp = Fastify()
  await pgApp.register(fastifyPostgres, { connectionString: db.directUrl })
  pgApp.post<Day>('/bookings/:id', async (req) => {
    const { rows } = await pgApp.pg.query('UPDATE bookings SET day = $1, at = $2 WHERE id = $3 RETURNING id', [
      req.query.day,
      req.query.day,
      req.params.id,
    ])
    return rows[0]
  })
  poolApp = Fastify()
  await poolApp.register(pgPool, { connection: db.url })
  poolApp.post<Day>('/bookings/:id', async (request) => {
    const [row] = await request.db`
      update bookings set day = ${request.query.day}, at = ${request.query.day} where id = ${request.params.id} returning id`
    return row
  })
  await Promise.all([pgApp.ready(), poolApp.ready()])
})
afterAll(async () => {
  await Promise.all([pgApp?.close(), poolApp?.close()])
  await db?.drop()
})

async function set(app: FastifyInstance, id: number, day: string) {
  const response = await app.inject({ method: 'POST', url: `/bookings/${id}?day=${encodeURIComponent(day)}` })
  const [row] = await db.sql`select day::text as day, at::text as at from bookings where id = ${id}`
  return { status: response.statusCode, stored: { day: row?.day ?? null, at: row?.at ?? null } }
}

describe('a date parameter given as text', () => {
  test('text the server reads is stored as with @fastify/postgres', async () => {
    let id = 0
    for (const day of ['2024-01-15', '2024-01-15 10:30:00+02', 'infinity']) {
      const before = await set(pgApp, ++id, day)
      expect(before.status, `pg, ${day}`).toBe(200)
      expect(await set(poolApp, ++id, day), `fastify-pg-pool, ${day}`).toEqual(before)
    }
  })

  test('text the server cannot read as a date is refused (400), never stored as another date', async () => {
    let id = 20
    for (const day of ['2024-02-30', 'garbage-0', '42', 'May 5']) {
      expect((await set(pgApp, ++id, day)).status, `pg, ${day}`).toBe(500) // pg: the server's message
      expect(await set(poolApp, ++id, day), `fastify-pg-pool, ${day}`).toEqual({
        status: 400,
        stored: { day: null, at: null },
      })
    }
  })

  test('a Date and a number of milliseconds still go as postgres.js sends them', async () => {
    const [row] = await poolApp.db`
      select ${new Date('2024-01-15T10:00:00Z')}::timestamptz = '2024-01-15T10:00:00Z' as date,
        ${db.sql.typed(Date.UTC(2024, 0, 15), 1184) as unknown as string}::timestamptz = '2024-01-15T00:00:00Z' as ms`
    expect(row).toEqual({ date: true, ms: true })
  })
})

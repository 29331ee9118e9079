// An app gives postgres.js a type of its own that serializes booleans or dates through `from`
// (postgres.js installs `serialize` for every oid of `from` as well as for `to`): `{ to: 25,
// from: [16], serialize }`. Its serializer should be the one used for boolean parameters, as in
// plain postgres.js; the pool's boolean and date handling of this round (text goes as text)
// replaced it, because it only looked at `to`: 'J' went as 'J' and the server refused it.
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => db?.drop())

function connectionOf(url: string) {
  const parsed = new URL(url)
  return {
    host: parsed.hostname,
    port: Number(parsed.port),
    database: decodeURIComponent(parsed.pathname.slice(1)),
    user: decodeURIComponent(parsed.username),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
  }
}

test("an app's serializer given for booleans and dates through `from` is used", async () => {
  const app = Fastify()
  await app.register(pgPool, {
    connection: {
      ...connectionOf(db.url),
      types: {
        janee: {
          to: 25,
          from: [16],
          serialize: (x: unknown) => (x === 'J' ? 't' : 'f'),
          parse: (x: string) => (x === 't' ? 'J' : 'N'),
        },
        day: {
          to: 25,
          from: [1082],
          serialize: (x: unknown) => (x === 'today' ? '2020-01-02' : String(x)),
          parse: (x: string) => x,
        },
      },
    },
    health: false,
    metrics: false,
    backpressure: false,
  })
  await app.ready()
  try {
    const [row] = await app.db`select ${'J'}::bool as j, ${'today'}::date as d`
    expect(row).toEqual({ j: 'J', d: '2020-01-02' })
  } finally {
    await app.close()
  }
})

import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

// HELD (probe-second-api): the call forms postgres.js documents still work after this round's
// refusals of pg's forms (bcaffe2: unsafe() refuses a text that is no string and callbacks, file()
// callbacks, lease() arguments), and booleans given as text (ac5b448) go as text on every route
// kind and query form: unsafe with and without prepare, a pipelined route, a JS array into a
// boolean[] column, with a `transform` given, and an app's own boolean type (`to: '16'`, a string)
// still replaces the pool's.

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table flags (id serial primary key, on_ boolean, many boolean[])`
})
afterAll(async () => db?.drop())

function connectionOf(url: string) {
  const parsed = new URL(url)
  return {
    host: parsed.hostname,
    port: Number(parsed.port),
    user: decodeURIComponent(parsed.username),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
    database: parsed.pathname.slice(1),
  }
}

test("postgres.js's own call forms are not refused", async () => {
  const app = Fastify()
  await app.register(pgPool, { connection: db.url })
  await app.ready()
  try {
    const file = join(tmpdir(), `second-api-${process.pid}.sql`)
    await writeFile(file, 'select $1::int as n')
    expect(await app.db.unsafe('select 1 as n')).toEqual([{ n: 1 }])
    expect(await app.db.unsafe('select $1::int as n', [2])).toEqual([{ n: 2 }])
    expect(await app.db.unsafe('select $1::int as n', [3], { prepare: true })).toEqual([{ n: 3 }])
    expect(await app.db.unsafe('select 4 as n', [], { prepare: false })).toEqual([{ n: 4 }])
    expect(await app.db.file(file, [5])).toEqual([{ n: 5 }])
    expect(await app.db.file(file, [6], { cache: false } as never)).toEqual([{ n: 6 }])
    const lease = await app.db.lease()
    try {
      expect(await lease`select 7 as n`).toEqual([{ n: 7 }])
    } finally {
      await lease.release()
    }
  } finally {
    await app.close()
  }
})

test('booleans given as text on a pipelined route, in unsafe with prepare, in a JS array, with a transform', async () => {
  const piped = Fastify()
  await piped.register(pgPool, { connection: { ...connectionOf(db.url), transform: { undefined: null } } })
  piped.post<{ Querystring: { on: string } }>('/flag', { config: { db: { pipeline: true } } }, async (request) => {
    const [row] =
      await request.db`insert into flags (on_, many) values (${request.query.on}, ${[request.query.on, 'no']})
      returning on_, many`
    const [again] = await request.db.unsafe('select $1::bool as b', [request.query.on], { prepare: true })
    return { ...row, again: again?.b }
  })
  await piped.ready()
  try {
    const yes = await piped.inject({ method: 'POST', url: '/flag?on=yes' })
    expect(yes.json()).toEqual({ on_: true, many: [true, false], again: true })
    const bad = await piped.inject({ method: 'POST', url: '/flag?on=secret-bogus' })
    expect(bad.statusCode).toBe(400)
    expect(bad.body).not.toContain('secret-bogus')
  } finally {
    await piped.close()
  }
})

test("an app's own boolean type given with to: '16' (a string) still replaces the pool's serializer", async () => {
  const app = Fastify()
  await app.register(pgPool, {
    connection: {
      ...connectionOf(db.url),
      types: {
        yesno: {
          to: '16' as unknown as number,
          from: [16],
          serialize: (x: unknown) => (x === 'Y' ? 't' : 'f'),
          parse: (x: string) => (x === 't' ? 'Y' : 'N'),
        },
      },
    },
  })
  await app.ready()
  try {
    const [row] = await app.db`select ${'Y'}::bool as y, ${'true'}::bool as t`
    expect(row).toEqual({ y: 'Y', t: 'N' })
  } finally {
    await app.close()
  }
})

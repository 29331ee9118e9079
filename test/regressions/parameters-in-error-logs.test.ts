import { randomBytes } from 'node:crypto'
import type { DatabaseError } from '@fastify-pg-pool/core'
import type { FastifyRequest } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// The README promises "never a query parameter" in logs. Bodies were clean, but the log line's
// cause kept the server's message outside class 22, and the server quotes a parameter in many
// other classes: `${name}::regclass` gave `relation "<the parameter>" does not exist` (42P01),
// `${name}::regtype` 42704, a function's `raise exception` its own text with the value in it.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table users (id serial primary key, email text unique not null);
    create function find_user(wanted text) returns int language plpgsql as
      $f$ begin raise exception 'no user %', wanted; end $f$;
  `)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

type Query = (db: FastifyRequest['db'], value: string) => Promise<unknown>

const cases: [string, string, Query][] = [
  ['a regclass cast', '42P01', (sql, value) => sql`select pg_total_relation_size(${value}::regclass)`],
  ['a regtype cast', '42704', (sql, value) => sql`select ${value}::regtype`],
  ['nextval of a name', '42P01', (sql, value) => sql`select nextval(${value})`],
  [
    'has_table_privilege of a role',
    '42704',
    (sql, value) => sql`select has_table_privilege(${value}, 'users', 'select')`,
  ],
  ['a bad integer', '22P02', (sql, value) => sql`select ${value}::int`],
  ['a function raising with the value', 'P0001', (sql, value) => sql`select find_user(${value})`],
  [
    'a duplicate key (the value is in the detail)',
    '23505',
    async (sql, value) => {
      await sql`insert into users (email) values (${value})`
      return sql`insert into users (email) values (${value})`
    },
  ],
]

/** The `err` of the current app's log line whose error has SQLSTATE `code`. */
function loggedError(code: string): { condition?: string; message?: string } | undefined {
  const line = current?.logs.find((entry) => (entry.err as { code?: string } | undefined)?.code === code)
  return line?.err as { condition?: string; message?: string } | undefined
}

describe('a PostgreSQL error logs no query parameter, whatever its class', () => {
  for (const [name, code, query] of cases) {
    test(`${name} (${code}): the log line has the SQLSTATE and its condition, not the value`, async () => {
      const secret = `secretparam${randomBytes(6).toString('hex')}`
      current = await coreApp(db.url)
      current.app.get('/q', async (request) => query(request.db, secret))
      const response = await current.app.inject('/q')
      expect(response.json().code).toBe(code)
      const logged = loggedError(code)
      expect(logged, `a log line with err.code ${code}`).toBeDefined()
      expect(logged?.condition).toMatch(/^[a-z_]+$/)
      expect(JSON.stringify(current.logs)).not.toContain(secret)
    })
  }

  test('a message pointing into the statement text is kept: it cannot quote a parameter', async () => {
    current = await coreApp(db.url)
    current.app.get('/q', async (request) => request.db`select * from no_such_table where id = ${1}`)
    expect((await current.app.inject('/q')).json().code).toBe('42P01')
    expect(loggedError('42P01')?.message).toContain('relation "no_such_table" does not exist')
  })
})

describe("the server's message stays readable to the handler", () => {
  test('serverMessage holds a raise exception text for the handler to map; the log never shows it', async () => {
    const secret = `secretparam${randomBytes(6).toString('hex')}`
    current = await coreApp(db.url)
    current.app.get('/q', async (request, reply) => {
      const error = await request.db`select find_user(${secret})`.then(
        () => undefined,
        (e: unknown) => e as DatabaseError,
      )
      request.log.error({ err: error }, 'the handler logs what it caught')
      return reply.code(404).send({ mapped: error?.serverMessage === `no user ${secret}`, code: error?.code })
    })
    const response = await current.app.inject('/q')
    expect(response.json()).toEqual({ mapped: true, code: 'P0001' })
    expect(JSON.stringify(current.logs)).not.toContain(secret)
  })
})

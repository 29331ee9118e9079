import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// `replica.readYourWrites.header: 'x pg read after'` registered; then every write's reply set a
// header Node refuses (ERR_INVALID_HTTP_TOKEN): the write never answered, and the rejection went
// unhandled. The header and the cookie name must be HTTP tokens (RFC 9110 tchar, RFC 6265
// cookie-name), checked at register.

const secret = 'a-test-secret-of-some-length'
let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table items (id serial primary key)`
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db?.drop())

async function register(readYourWrites: Record<string, unknown>): Promise<unknown> {
  app = Fastify()
  return app
    .register(pgPoolCore, {
      connection: db.url,
      pool: { lazy: true },
      replica: { readYourWrites: { secret, ...readYourWrites } },
    })
    .then(
      () => 'registered',
      (error: unknown) => error,
    )
}

describe('read-your-writes header and cookie names are HTTP tokens', () => {
  for (const header of ['x pg read after', 'x-pg:read', 'x-pg-read-after\r\n', 'x-pg-lu-é', '(x)']) {
    test(`header ${JSON.stringify(header)} is refused at register`, async () => {
      expect(await register({ header })).toMatchObject({
        code: 'FST_PG_POOL_INVALID_OPTION',
        message: expect.stringContaining('Invalid option replica.readYourWrites.header: expected an HTTP header name'),
      })
    })
  }

  for (const cookie of ['pg token', 'pg;token', 'pg=token', 'pg,token', '"pg"']) {
    test(`cookie ${JSON.stringify(cookie)} is refused at register`, async () => {
      expect(await register({ cookie })).toMatchObject({
        code: 'FST_PG_POOL_INVALID_OPTION',
        message: expect.stringContaining('Invalid option replica.readYourWrites.cookie: expected a cookie name'),
      })
    })
  }

  test('a header in capitals is the same header: a write answers and carries it', async () => {
    expect(await register({ header: 'X-PG-Read-After', cookie: 'pg_read_after' })).toBe('registered')
    app?.post('/write', async (request) => (await request.db`insert into items default values returning id`)[0])
    const response = await app?.inject({ method: 'POST', url: '/write' })
    expect(response?.statusCode).toBe(200)
    expect(response?.headers['x-pg-read-after']).toEqual(expect.any(String))
    expect(String(response?.headers['set-cookie'])).toMatch(/^pg_read_after=/)
  })
})

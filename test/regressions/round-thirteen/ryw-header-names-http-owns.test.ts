// DEFECT (probe-options, low). What the user does: sets `replica.readYourWrites.header` to a name
// HTTP itself gives a meaning (`transfer-encoding`, `content-type`, `content-length`, `connection`,
// `set-cookie`), say to reuse an existing header or by a slip. What they see: register accepts it;
// then every reply after a write carries the token in that header: with `transfer-encoding` the
// reply is unreadable (Node's client: "Parse Error: Content-Length can't be present with
// Transfer-Encoding") although the write was committed; with `content-type` the JSON body goes out
// as `Content-Type: 0/1B84750.wy80...`; with `connection` keep-alive is gone; with `set-cookie` the
// client stores a cookie named after the LSN; with `content-length` Fastify overwrites the token,
// and read-your-writes silently never works. What they should see: FST_PG_POOL_INVALID_OPTION at
// register naming replica.readYourWrites.header (the header option only checks that the name is an
// HTTP token). Cause: packages/core/src/options.ts (resolveReplicas, `header: headerName(...)`)
// and option-kit.ts headerName accept any token; read-your-writes.ts:95 `reply.header(header,
// token)` then overwrites whatever that header was. Suggested fix: refuse the names of
// representation, framing and hop-by-hop headers (content-*, transfer-encoding, connection,
// keep-alive, upgrade, te, trailer, host, set-cookie, cookie, location, date, ...), or require an
// `x-`-free name that is not in Node's list of headers it treats specially.
// Round thirteen: failed on a718e61 (every name registered; content-type replaced by the token).

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

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

async function register(header: string): Promise<unknown> {
  app = Fastify()
  return app
    .register(pgPoolCore, {
      connection: db.url,
      pool: { lazy: true },
      replica: { readYourWrites: { secret, header } },
    })
    .then(
      () => 'registered',
      (error: unknown) => error,
    )
}

describe('read-your-writes header names HTTP gives a meaning to', () => {
  for (const header of ['transfer-encoding', 'content-type', 'content-length', 'connection', 'set-cookie']) {
    test(`header ${JSON.stringify(header)} is refused at register`, async () => {
      expect(await register(header)).toMatchObject({
        code: 'FST_PG_POOL_INVALID_OPTION',
        message: expect.stringContaining('replica.readYourWrites.header'),
      })
    })
  }

  test('what it does when accepted: a committed write answers with Content-Type set to the token', async () => {
    if ((await register('content-type')) !== 'registered') return
    app?.post('/write', async (request) => (await request.db`insert into items default values returning id`)[0])
    const response = await app?.inject({ method: 'POST', url: '/write' })
    expect(response?.statusCode).toBe(200)
    // Fails: the reply's Content-Type is the read-your-writes token, not JSON's.
    expect(response?.headers['content-type']).toBe('application/json; charset=utf-8')
  })
})

// DEFECT (attack-options, high). What the user does: passes the connection URL parsed, a common
// slip in TypeScript code that validates its config: `connection: new URL(process.env.DATABASE_URL)`
// (a WHATWG URL object instead of its string), e.g. `postgres://app:pw@db:5432/main?sslmode=require`.
// What they see: `register` succeeds and the pool serves requests from ANOTHER database: round
// thirteen's connectionSnapshot reads the URL object by property access, so the URL class's getters
// `host`, `hostname`, `port`, `username` and `password` are taken (right server, right
// credentials), but a URL has no `database` and no `ssl`: the database becomes the user's default
// (here `postgres`, the admin database, instead of the test's) and `?sslmode=require` is dropped,
// the connection in clear text. No error, no warning. What they should see: a URL object refused
// at register (FST_PG_POOL_INVALID_OPTION: "give the URL as a string", as `connectionString` keys are
// refused), or read as the URL it is (its string). Cause: packages/core/src/options.ts:756
// `checkKeys` sees no own keys on a URL instance and passes it; options.ts:501-512
// connectionSnapshot() then reads postgresOptionKeys through the prototype's getters. Suggested
// fix: refuse (or stringify) `connection instanceof URL` before checkKeys; more generally refuse an
// object whose getters name `host`/`username` but that is not an options object (`href` present).
// The same family, older: a Map of options (`new Map(Object.entries(config))`) has no property
// postgres.js reads, and registers on localhost:5432 (PGHOST) as the OS user, where
// the docs say options postgres.js would ignore are refused.
// Round thirteen, second round: failed on 1fd7255 (both servers); passes after its fix.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
const apps: FastifyInstance[] = []

beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close()
})
afterAll(() => db?.drop())

async function outcome(connection: unknown): Promise<{ refused: unknown } | { database: unknown; ssl: unknown }> {
  const app = Fastify()
  apps.push(app)
  try {
    await app.register(pgPoolCore, { connection: connection as never, pool: { max: 1 } })
    app.get('/where', async (request) => {
      const [row] = await request.db<{ database: string; ssl: boolean }[]>`
        select current_database() as database,
          coalesce((select ssl from pg_stat_ssl where pid = pg_backend_pid()), false) as ssl`
      return row
    })
    await app.ready()
  } catch (error) {
    return { refused: (error as { code?: unknown }).code }
  }
  const reply = await app.inject('/where')
  return reply.statusCode === 200 ? reply.json() : { refused: reply.statusCode }
}

describe('connection given as a URL object', () => {
  test('new URL(url)', async () => {
    const url = new URL(db.directUrl)
    const name = url.pathname.slice(1)
    const result = await outcome(url)
    if ('refused' in result) expect(result.refused).toBe('FST_PG_POOL_INVALID_OPTION')
    // Fails: { database: 'postgres' }, the user's default database.
    else expect(result.database).toBe(name)
  })

  test('new URL(url) with ?sslmode=require: TLS, or no connection at all', async () => {
    const url = new URL(db.directUrl)
    url.searchParams.set('sslmode', 'require')
    const result = await outcome(url)
    // Refused (a coded refusal, or no connection where the server has no TLS), or over TLS.
    if ('refused' in result) expect(result.refused).not.toBe(200)
    // Fails: ssl false, the sslmode the URL names dropped.
    else expect(result.ssl).toBe(true)
  })

  test('a Map of options: refused, not taken for localhost', async () => {
    const app = Fastify()
    apps.push(app)
    const connection = new Map<string, unknown>([
      ['host', '10.255.255.1'],
      ['port', 6543],
      ['database', 'main'],
    ])
    const result = await app.register(pgPoolCore, { connection: connection as never, pool: { lazy: true } }).then(
      () => ({ registered: app.pgPools.all()[0]?.target }),
      (error: { code?: unknown }) => ({ refused: error.code }),
    )
    // Fails: { registered: 'localhost:5432/' }.
    expect(result).toEqual({ refused: 'FST_PG_POOL_INVALID_OPTION' })
  })
})

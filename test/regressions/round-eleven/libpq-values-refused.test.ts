import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

// Hostile probing, round twelve (options, second round on commit 6528993).
//
// Docs: packages/core/README.md "Connection": `connect_timeout` is read "(seconds, as postgres.js
// and libpq read it: becomes `pool.connectTimeout`)"; the URL's `?statement_timeout=` is read as a
// PostgreSQL duration. The same section treats libpq's "no setting" value as absent
// (`target_session_attrs=any`, "libpq's default, is taken as absent").
//
// What happens since 6528993 (connectTimeoutSeconds and settingMilliseconds in
// packages/core/src/options.ts), at register, FST_PG_POOL_INVALID_OPTION:
// 1. `?connect_timeout=0` (libpq: "Zero, negative, or not specified means wait indefinitely";
//    postgres.js: 0 is no timer; Prisma-style DATABASE_URLs carry it): refused
//    ("expected seconds (a number > 0), got "0""). Before 6528993 the query parameter was taken
//    (and the pool's connectTimeout applied): a working DATABASE_URL now stops the app from
//    starting. Same for `connect_timeout: 0` in an options object (postgres.js's typings: number).
// 2. `?statement_timeout=1.5s` (PostgreSQL takes fractions for durations: the session gets
//    1500ms; before 6528993 the URL's value reached the session as it is): refused.
// Expected: taken (0 as absent: the pool's connectTimeout; 1.5s as 1500 ms).

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})

const withQuery = (query: string) => `${db.directUrl}${db.directUrl.includes('?') ? '&' : '?'}${query}`

async function outcome(connection: unknown) {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection: connection as never, pool: { max: 1 } })
    app.get('/q', async (request) => (await request.db`select current_setting('statement_timeout') as st`)[0])
    await app.ready()
    const res = await app.inject('/q')
    return { status: res.statusCode, st: (res.json() as { st?: string }).st, options: app.pgPool.options }
  } catch (error) {
    const e = error as Error & { code?: string }
    return { refused: `${e.code}: ${e.message}` }
  } finally {
    await app.close().catch(() => {})
  }
}

describe('libpq and PostgreSQL values the pool now refuses', () => {
  test('DATABASE_URL-style ?connect_timeout=0 (libpq: no timeout) starts the app', async () => {
    const found = await outcome(withQuery('connect_timeout=0'))
    expect(found).toMatchObject({ status: 200 })
  })

  test('connect_timeout: 0 in an options object (postgres.js: no timeout) starts the app', async () => {
    const u = new URL(db.directUrl)
    const found = await outcome({
      host: u.hostname,
      port: Number(u.port),
      database: u.pathname.slice(1),
      username: decodeURIComponent(u.username),
      ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
      connect_timeout: 0,
    })
    expect(found).toMatchObject({ status: 200 })
  })

  test('?statement_timeout=1.5s (PostgreSQL: 1500ms) is read as 1500 ms', async () => {
    const found = await outcome(withQuery('statement_timeout=1.5s'))
    expect(found).toMatchObject({ status: 200, st: '1500ms', options: { statementTimeout: 1_500 } })
  })

  test('control: ?connect_timeout=2 and ?statement_timeout=2s are read', async () => {
    const found = await outcome(withQuery('connect_timeout=2&statement_timeout=2s'))
    expect(found).toMatchObject({ status: 200, st: '2s', options: { connectTimeout: 2_000, statementTimeout: 2_000 } })
  })
})

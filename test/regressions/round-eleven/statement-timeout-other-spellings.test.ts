import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

// Hostile probing, round twelve (options, second round on commit 6528993).
//
// Docs: packages/core/README.md "Connection": the URL's `?statement_timeout=` "becomes
// `pool.statementTimeout`, so the client's deadline follows it"; "`statement_timeout` and
// `application_name` as startup parameters (`connection: { connection: { ... } }`) are refused:
// the pool sets them." The fix's own regression test (test/regressions/connection-option-types
// .test.ts, item 5) calls a startup parameter the pool silently replaces a defect ("a migration
// from postgres.js loses its timeout unseen").
//
// What happens: only the exact lowercase names are recognised (options.ts
// `ownedStartupParameters`, and `parsed.searchParams.delete('statement_timeout')`). libpq's and
// postgres.js's other spellings of the same setting pass untouched:
// 1. `?options=-c%20statement_timeout%3D100` (libpq's documented way to set a GUC at connect,
//    common in DATABASE_URLs) and `connection: { connection: { options: '-c statement_timeout=100' } }`:
//    accepted, and the pool's own `statement_timeout` startup parameter (30 s) silently wins on the
//    server (PostgreSQL applies `options` before the other startup parameters). With postgres.js
//    alone the session gets 100 ms.
// 2. `?Statement_Timeout=100` (GUC names are case-insensitive on the server): accepted, the
//    session gets 100 ms, while app.pgPool.options.statementTimeout (and the client's deadline,
//    statementTimeout + 1 s) stay 30000: server and client disagree (a `?STATEMENT_TIMEOUT=120s`
//    gets its statements abandoned and its connections discarded by the client at 31 s).
// Expected either a refusal naming it (FST_PG_POOL_INVALID_OPTION), or the setting honoured and
// app.pgPool.options.statementTimeout equal to what the session has.
// Cause: packages/core/src/options.ts resolveConnection (URL query) and checkConnectionValues
// (startup parameters): exact-name checks only; connection-factory.ts appends statement_timeout.

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})

function parts() {
  const u = new URL(db.directUrl)
  return {
    host: u.hostname,
    port: Number(u.port),
    database: decodeURIComponent(u.pathname.slice(1)),
    username: decodeURIComponent(u.username),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
  }
}

const withQuery = (query: string) => `${db.directUrl}${db.directUrl.includes('?') ? '&' : '?'}${query}`

/** Refused (naming `statement_timeout`), or the session's setting and the pool's option. */
async function outcome(connection: unknown): Promise<{ refused: string } | { session: string; option: number }> {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection: connection as never, pool: { max: 1 } })
    app.get('/q', async (request) => (await request.db`select current_setting('statement_timeout') as st`)[0])
    await app.ready()
    const res = await app.inject('/q')
    return { session: (res.json() as { st: string }).st, option: app.pgPool.options.statementTimeout }
  } catch (error) {
    const e = error as Error & { code?: string }
    return { refused: `${e.code}: ${e.message}` }
  } finally {
    await app.close().catch(() => {})
  }
}

function expectRefusedOrConsistent(found: Awaited<ReturnType<typeof outcome>>, ms: number, shown: string) {
  if ('refused' in found) {
    expect(found.refused).toMatch(/^FST_PG_POOL_INVALID_OPTION: .*statement_timeout/i)
    return
  }
  expect(found).toEqual({ session: shown, option: ms })
}

describe('statement_timeout in spellings the pool does not recognise', () => {
  test("URL ?options=-c statement_timeout=100 (libpq's form): refused, or honoured", async () => {
    expectRefusedOrConsistent(await outcome(withQuery('options=-c%20statement_timeout%3D100')), 100, '100ms')
  })

  test("connection.connection.options '-c statement_timeout=100': refused, or honoured", async () => {
    expectRefusedOrConsistent(
      await outcome({ ...parts(), connection: { options: '-c statement_timeout=100' } }),
      100,
      '100ms',
    )
  })

  test('URL ?Statement_Timeout=100 (mixed case): refused, or the client deadline agrees with the session', async () => {
    expectRefusedOrConsistent(await outcome(withQuery('Statement_Timeout=100')), 100, '100ms')
  })

  test('control: ?statement_timeout=100 is read as pool.statementTimeout and reaches the session', async () => {
    expect(await outcome(withQuery('statement_timeout=100'))).toEqual({ session: '100ms', option: 100 })
  })
})

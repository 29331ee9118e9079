// DEFECT (third-b, medium). What the user does: sets a session default in `onConnect` (README
// "Per-connection setup"), here `set client_encoding = 'LATIN1'` (or 'WIN1252', 'SQL_ASCII'),
// copied from a legacy setup whose database is LATIN1-minded. What they see: register succeeds
// and every request on every connection reads (and writes) other text than the database holds,
// with no error: 'café' comes back as 'caf\uFFFD' (the server sends LATIN1 bytes, postgres.js
// decodes UTF-8), and the session reset puts LATIN1 back after every request (onConnect's value is
// the baseline). The same setting given any other way is refused since round thirteen
// (`connection.connection.client_encoding`, `?client_encoding=`, `options=-c client_encoding=`:
// options.ts decodingSettings, "expected 'UTF8'"), and onConnect's DateStyle, bytea_output and
// extra_float_digits are refused after onConnect now (on-connect-decoding-settings). What they
// should see: the connection refused, FST_PG_POOL_CONNECT_FAILED with cause UNREADABLE_SETTINGS,
// or the text read right. Cause: packages/core/src/postgres-adapter.ts:927-929 READABLE (the
// check checkSettings() runs after onConnect, connection-factory.ts:177) tests bytea_output and
// extra_float_digits only; refuseUnreadable (postgres-adapter.ts:955) adds DateStyle, not
// client_encoding. Suggested fix: add
// `pg_catalog.current_setting('client_encoding') OPERATOR(pg_catalog.=) 'UTF8'` to READABLE (or
// read sql.parameters.client_encoding, which the server reports, as DateStyle is).
// Round thirteen, third round: failed on 381590e (both servers); passes after its fix.

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

async function outcome(setting: string): Promise<{ refused: unknown } | { read: unknown }> {
  const app = Fastify()
  apps.push(app)
  try {
    await app.register(pgPoolCore, {
      connection: db.directUrl,
      pool: { max: 1 },
      onConnect: async (sql) => {
        await sql.unsafe(setting)
      },
    })
    app.get('/read', async (request) => {
      const [row] = await request.db.unsafe(`select 'caf' || chr(233) as t`)
      return row
    })
    await app.ready()
  } catch (error) {
    return { refused: (error as { cause?: { code?: unknown } }).cause?.code }
  }
  await app.inject('/read')
  return { read: (await app.inject('/read')).json() }
}

describe('client_encoding set by onConnect', () => {
  test('held: a UTF8 onConnect setting reads right', async () => {
    expect(await outcome("set client_encoding = 'UTF8'")).toEqual({ read: { t: 'café' } })
  })

  test("set client_encoding = 'LATIN1': refused like every other way to set it, or read right", async () => {
    const result = await outcome("set client_encoding = 'LATIN1'")
    if ('refused' in result) expect(result.refused).toBe('UNREADABLE_SETTINGS')
    else expect(result.read).toEqual({ t: 'café' })
  })
})

import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

// HOLDS: settings a request sets that change how results read (and one, session_replication_role,
// that disables triggers and foreign keys) never reach the next request on the same connection
// (max: 1), set one statement at a time or all in one simple-protocol message, on a plain or a
// transaction route, and the connection is reset, not retired (the same backend pid after).

let db: TestDatabase
let current: TestApp | undefined

const settings: Record<string, string> = {
  DateStyle: 'SQL, DMY',
  IntervalStyle: 'sql_standard',
  TimeZone: 'Pacific/Chatham',
  bytea_output: 'escape',
  extra_float_digits: '-15',
  standard_conforming_strings: 'off',
  client_encoding: 'LATIN1',
  lc_messages: 'C',
  search_path: 'pg_temp, public',
  default_transaction_read_only: 'on',
  session_replication_role: 'replica',
  transform_null_equals: 'on',
  escape_string_warning: 'off',
  array_nulls: 'off',
  xmloption: 'document',
  default_transaction_isolation: 'serializable',
}

beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop()
})

const names = Object.keys(settings)
const read = `select pg_backend_pid() as pid, ${names
  .map((name, i) => `pg_catalog.current_setting('${name}') as s${i}`)
  .join(', ')}`

describe('request settings never reach the next request (max: 1)', () => {
  for (const [route, transaction] of [
    ['/plain', false],
    ['/tx', true],
  ] as const) {
    for (const oneMessage of [false, true]) {
      test(`${route}, ${oneMessage ? 'one message' : 'one statement each'}`, async () => {
        current = await coreApp(db.url, { max: 1 })
        const { app } = current
        app.get('/read', async (request) => (await request.db.unsafe(read))[0])
        app.post(route, { config: { db: { transaction } } }, async (request) => {
          const sets = Object.entries(settings).map(([name, value]) => `set ${name} = '${value}'`)
          if (oneMessage) await request.db.unsafe(sets.join('; '))
          else for (const set of sets) await request.db.unsafe(set)
          return (await request.db.unsafe(read))[0]
        })
        const before = (await app.inject('/read')).json() as Record<string, unknown>
        const during = await app.inject({ method: 'POST', url: route })
        expect(during.statusCode).toBe(200)
        // They did take effect for the request itself.
        const inside = during.json() as Record<string, unknown>
        expect(inside.s0).toBe('SQL, DMY')
        expect(inside.s10).toBe('replica')
        const after = (await app.inject('/read')).json() as Record<string, unknown>
        expect(after).toEqual(before)
      })
    }
  }
})

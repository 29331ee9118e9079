// HELD (attack-options): round thirteen stopped overriding a URL's `?prepare=false` (connection-
// factory.ts leaves `prepare` unset unless pgbouncer). With it: postgres.js names no statement
// (the protocol-level prepared statements of a connection stay none while requests run), the
// reset's check (a SQL-level PREPARE of the pool's own) still works, a request's SQL `PREPARE`
// never reaches the next request, and a request's setseed() never chooses the next one's
// random().

import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
let current: TestApp | undefined

beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db?.drop())

function withQuery(url: string, key: string, value: string): string {
  const parsed = new URL(url)
  parsed.searchParams.set(key, value)
  return parsed.toString()
}

describe('?prepare=false passes through, the session reset still holds', () => {
  test('no protocol-level statements, SQL PREPARE and setseed do not cross requests', async () => {
    current = await coreApp(withQuery(db.directUrl, 'prepare', 'false'), { max: 1 })
    const { app } = current
    app.get('/state', async (request) => {
      const [row] = await request.db<{ pid: number; protocol: number; mine: number; r: number }[]>`
        select pg_catalog.pg_backend_pid() as pid,
          (select count(*)::int from pg_catalog.pg_prepared_statements where not from_sql) as protocol,
          (select count(*)::int from pg_catalog.pg_prepared_statements where name = 'mine') as mine,
          random() as r`
      return row
    })
    app.post('/dirty', async (request) => {
      await request.db.unsafe('prepare mine as select 1')
      await request.db`select setseed(0.5)`
      return { ok: true }
    })
    const first = (await app.inject('/state')).json()
    expect(first.protocol).toBe(0)
    expect((await app.inject({ method: 'POST', url: '/dirty' })).statusCode).toBe(200)
    const after = (await app.inject('/state')).json()
    expect(after.protocol).toBe(0)
    expect(after.mine).toBe(0)
    // What random() gives right after setseed(0.5), on this server.
    const [seeded] = await db.sql.unsafe<{ r: number }[]>('select setseed(0.5), random() as r')
    expect(after.r).not.toBe(seeded?.r)
  })
})

import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// A reset that fails (here: request A left a SQL-level prepared statement) leaves its
// transaction aborted, so PostgreSQL refuses what request B queued behind it, and the pool sends
// B's statements again on another connection. An aborted transaction still accepts one kind of
// statement: one that ends it (ROLLBACK, COMMIT, ABORT, END). When B's first statement was one of
// those, whatever B had queued after it ran on the old connection as well (on a session the
// failed reset had not cleaned) and then ran again on the new one.

let db: TestDatabase
let current: TestApp
let app: FastifyInstance
let doB: (sql: FastifyInstance['db']) => Promise<unknown>

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe('create table ledger (id serial primary key, note text)')
})
beforeEach(async () => {
  await db.sql`truncate ledger`
  current = await coreApp(db.url, { max: 1 })
  app = current.app
  app.post('/a', async (request) => {
    await request.db.unsafe('set application_name = leaked_a; prepare leaked as select 1')
    return { ok: true }
  })
  app.post('/b', async (request) => {
    const result = await doB(request.db as unknown as FastifyInstance['db'])
    return { result }
  })
})
afterEach(async () => {
  await current?.app.close()
})
afterAll(async () => {
  await db.drop()
})

async function aThenB(): Promise<{ status: number; body: unknown; notes: string[] }> {
  expect((await app.inject({ method: 'POST', url: '/a' })).statusCode).toBe(200)
  const b = await app.inject({ method: 'POST', url: '/b' })
  const rows = await db.sql<{ note: string }[]>`select note from ledger order by id`
  return { status: b.statusCode, body: b.json(), notes: rows.map((r) => r.note) }
}

describe('a failed reset: what B queued behind an ending statement runs once, on a clean session', () => {
  test('one simple-protocol message: ROLLBACK, then an insert', async () => {
    doB = (sql) => sql.unsafe("rollback; insert into ledger (note) values (current_setting('application_name'))")
    const { status, notes } = await aThenB()
    expect(status).toBe(200)
    expect(notes).toHaveLength(1)
    expect(notes[0]).not.toBe('leaked_a')
  })

  test('two statements sent at once: COMMIT, then an insert', async () => {
    doB = (sql) =>
      Promise.all([
        sql.unsafe('commit'),
        sql`insert into ledger (note) values (current_setting('application_name')) returning note`,
      ])
    const { status, notes, body } = await aThenB()
    expect(status).toBe(200)
    expect(notes).toHaveLength(1)
    expect(notes[0]).not.toBe('leaked_a')
    expect(JSON.stringify(body)).not.toContain('leaked_a')
  })

  test('ABORT then a read of the session: B sees a clean one', async () => {
    doB = async (sql) => {
      const [, [row]] = await Promise.all([
        sql.unsafe('abort'),
        sql<{ name: string }[]>`select current_setting('application_name') as name`,
      ])
      return row?.name
    }
    const { status, body } = await aThenB()
    expect(status).toBe(200)
    expect((body as { result: string }).result).not.toBe('leaked_a')
  })
})

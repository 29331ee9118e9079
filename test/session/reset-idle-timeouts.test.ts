import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table items (id int primary key, name text)`
  await db.sql`insert into items select g, 'n' || g from generate_series(1, 100) g`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop()
})

// A request's idle timeout can end its session between its last statement and the reset
// (packages/core/README.md, "A session the server ends before the reset"): nothing of it may
// reach the next request, which is served, or refused with a retryable 503 when its first
// statement was written on the connection the server closed.
describe('idle timeouts set by a request', () => {
  for (const [name, sqlText] of [
    ['idle_session_timeout', "set idle_session_timeout = '1ms'"],
    [
      'idle_in_transaction_session_timeout with a block left open',
      "set idle_in_transaction_session_timeout = '1ms'; begin",
    ],
  ] as const) {
    test(`${name}: the next request never runs with it; it is served or gets a retryable 503`, async () => {
      current = await coreApp(db.url, { max: 1 })
      const { app } = current
      app.post('/a', async (request) => {
        await request.db.unsafe(sqlText)
        return 'a'
      })
      app.get('/b', async (request) => {
        const [row] = await request.db`select name,
          current_setting('idle_session_timeout') as idle,
          current_setting('idle_in_transaction_session_timeout') as "idleInTransaction"
          from items where id = 1`
        return row
      })
      await app.ready()
      for (let i = 0; i < 40; i++) {
        const [, b] = await Promise.all([app.inject({ method: 'POST', url: '/a' }), app.inject('/b')])
        if (b.statusCode === 200) expect(b.json()).toEqual({ name: 'n1', idle: '0', idleInTransaction: '0' })
        else {
          expect(b.statusCode, b.body).toBe(503)
          expect(b.json().code).toBe('FST_PG_POOL_CONNECTION_LOST')
          expect(b.headers['retry-after']).toBeDefined()
        }
      }
    })
  }
})

describe('modes without the check', () => {
  for (const mode of ['rollback', 'never'] as const) {
    test(`${mode}: no statement prepared by the pool, DEALLOCATE ALL retires nothing`, async () => {
      current = await coreApp(db.url, { max: 1, sessionReset: mode })
      const { app } = current
      app.get('/x', async (request) => {
        const [row] = await request.db`select pg_backend_pid() as pid,
          (select count(*)::int from pg_prepared_statements where from_sql) as "fromSql"`
        await request.db.unsafe('deallocate all')
        return row
      })
      const a = (await app.inject('/x')).json()
      const b = (await app.inject('/x')).json()
      expect(a.fromSql).toBe(0)
      expect(b.pid).toBe(a.pid)
    })
  }
})

describe('onConnect PREPARE under concurrency', () => {
  test('max 2, 20 concurrent requests: all served', async () => {
    current = await coreApp(
      db.url,
      { max: 2 },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe('prepare app_item (int) as select name from items where id = $1')
        },
      },
    )
    const { app } = current
    app.get('/i/:id', async (request) => {
      const [row] = await request.db.unsafe(`execute app_item(${Number((request.params as { id: string }).id)})`)
      return row
    })
    await app.ready()
    const _t0 = Date.now()
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => app.inject(`/i/${i + 1}`)))
    const failed = results.filter((r) => r.statusCode !== 200).map((r) => r.body)
    expect(failed).toEqual([])
  })
})

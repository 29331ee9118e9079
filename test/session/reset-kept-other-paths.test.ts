import type { FastifyRequest } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Hostile probing of onConnect's prepared statements on other paths: an onConnect that fails after
// preparing, the health ping, a named instance, an onConnect that leaves a transaction open.

let db: TestDatabase
let current: TestApp | undefined

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe('create table t (id serial primary key, v text)')
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop()
})

const stmtsQuery = `select pg_backend_pid() as pid, coalesce((select array_agg(name order by name) from pg_prepared_statements
  where from_sql and strpos(statement, 'pg_advisory_unlock_all') = 0), '{}') as statements,
  (select count(*)::int from pg_prepared_statements where strpos(statement, 'pg_advisory_unlock_all') > 0) as checks`

describe('other paths', () => {
  test('onConnect fails after preparing (first time): the next opening works, kept intact', async () => {
    let calls = 0
    current = await coreApp(
      db.url,
      { max: 1, lazy: true },
      {},
      {
        onConnect: async (sql) => {
          calls++
          await sql.unsafe('prepare a as select 1')
          if (calls === 1) throw new Error('boom after prepare')
        },
      },
    )
    const { app } = current
    app.get('/s', async (request) => (await request.db.unsafe(stmtsQuery))[0])
    const r1 = await app.inject('/s')
    const r2 = await app.inject('/s')
    const r3 = await app.inject('/s')
    const ok = [r1, r2, r3].filter((r) => r.statusCode === 200).map((r) => r.json())
    expect(ok.length).toBeGreaterThanOrEqual(2)
    for (const row of ok) expect(row.statements).toEqual(['a'])
    expect(ok.at(-1).pid).toBe(ok.at(-2).pid)
  })

  test('ping with an onConnect that prepares: ok, and pool connections keep their statement', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe('prepare a as select 1')
        },
      },
    )
    const { app } = current
    app.get('/s', async (request) => (await request.db.unsafe(stmtsQuery))[0])
    await app.ready()
    for (let i = 0; i < 3; i++) await app.pgPool.ping(2000)
    const a = (await app.inject('/s')).json()
    const b = (await app.inject('/s')).json()
    expect(a.statements).toEqual(['a'])
    expect(b.pid).toBe(a.pid)
    expect(current.logs.filter((l) => (l.level as number) >= 40)).toEqual([])
  })

  test("named instance: an onConnect PREPARE is kept, a request's PREPARE is not", async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        name: 'other',
        onConnect: async (sql) => {
          await sql.unsafe('prepare a as select 1')
        },
      },
    )
    const { app } = current
    const dbOf = (request: FastifyRequest) => request.dbs.other as FastifyRequest['db']
    app.get('/s', async (request) => (await dbOf(request).unsafe(stmtsQuery))[0])
    app.post('/leak', async (request) => {
      await dbOf(request).unsafe('prepare leaked as select 1')
      return 'ok'
    })
    const a = await app.inject('/s')
    expect(a.statusCode, a.body).toBe(200)
    const b = (await app.inject('/s')).json()
    expect(b.pid).toBe(a.json().pid)
    await app.inject({ method: 'POST', url: '/leak' })
    const c = (await app.inject('/s')).json()
    expect(c.statements).toEqual(['a'])
  })

  test("onConnect leaves a transaction open: a request's autocommit write that got 200 is not lost", async () => {
    current = await coreApp(
      db.url,
      { max: 1, lazy: true },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe('begin; select 1')
        },
      },
    )
    const { app } = current
    app.post('/w', async (request) => {
      await request.db`insert into t (v) values ('must-stay')`
      return 'ok'
    })
    app.get('/n', async (request) => (await request.db`select count(*)::int as n from t where v = 'must-stay'`)[0])
    const w = await app.inject({ method: 'POST', url: '/w' })
    await app.inject('/n')
    await app.inject('/n')
    const [row] = await db.sql`select count(*)::int as n from t where v = 'must-stay'`
    if (w.statusCode === 200) expect(row?.n).toBe(1)
  })
})

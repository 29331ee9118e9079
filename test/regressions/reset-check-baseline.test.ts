import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing after the reset's check became a statement prepared per connection:
// 1. A statement onConnect PREPAREd (SQL-level) failed every reset: each connection served one
//    request, then was retired with a warning (11 backends for 10 requests on bb891ab).
// 2. The check's operators (=, /, -) resolved through the search_path the reset runs with (the
//    database's default after RESET ALL): a request that put a text = text of its own in a schema
//    ahead of pg_catalog there made the check skip its PREPARE, which reached the next request.

let db: TestDatabase
let current: TestApp | undefined

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create schema app;
    create table app.items (id int primary key, name text);
    insert into app.items values (1, 'one'), (2, 'two');`)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop()
})

/** What the next request sees: its backend and the SQL-level statements on it. */
async function session(app: FastifyInstance): Promise<{ pid: number; statements: string[] }> {
  const response = await app.inject('/session')
  expect(response.statusCode, response.body).toBe(200)
  return response.json()
}

async function appWithPreparingOnConnect(): Promise<{ app: FastifyInstance; opened: () => number }> {
  let opened = 0
  current = await coreApp(
    db.url,
    { max: 1 },
    {},
    {
      onConnect: async (sql) => {
        opened++
        await sql.unsafe('prepare app_item (int) as select name from app.items where id = $1')
      },
    },
  )
  const { app } = current
  app.get('/item/:id', async (request) => {
    const [row] = await request.db.unsafe(`execute app_item(${Number((request.params as { id: string }).id)})`)
    return { name: row?.name }
  })
  app.get('/session', async (request) => {
    const [row] = await request.db<{ pid: number; statements: string[] }[]>`
      select pg_backend_pid() as pid,
        coalesce((select array_agg(name order by name) from pg_prepared_statements
          where from_sql and left(name, 22) <> 'fastify_pg_pool_reset_'), '{}') as statements`
    return row
  })
  app.post('/run', async (request) => {
    await request.db.unsafe((request.body as { sql: string }).sql)
    return { ok: true }
  })
  return { app, opened: () => opened }
}

describe("statements onConnect prepared are part of the session's baseline", () => {
  test('they do not fail the reset: one connection serves every request, no warning', async () => {
    const { app, opened } = await appWithPreparingOnConnect()
    const pids = new Set<number>()
    for (let i = 0; i < 10; i++) {
      expect((await app.inject('/item/1')).json()).toEqual({ name: 'one' })
      pids.add((await session(app)).pid)
    }
    expect(pids.size).toBe(1)
    expect(opened()).toBe(1)
    expect(current?.logs.filter((line) => (line.level as number) >= 40)).toEqual([])
  })

  test("a request's own PREPARE is still caught: the next request gets a new connection with onConnect's statement only", async () => {
    const { app } = await appWithPreparingOnConnect()
    const before = await session(app)
    expect(before.statements).toEqual(['app_item'])
    await app.inject({ method: 'POST', url: '/run', payload: { sql: 'prepare leaked as select 1' } })
    const after = await session(app)
    expect(after.statements).toEqual(['app_item'])
    expect(after.pid).not.toBe(before.pid)
  })

  test("a request that replaces onConnect's statement (same name, other text) is caught", async () => {
    const { app } = await appWithPreparingOnConnect()
    const before = await session(app)
    await app.inject({
      method: 'POST',
      url: '/run',
      payload: { sql: "deallocate app_item; prepare app_item (int) as select 'not yours' as name" },
    })
    expect((await app.inject('/item/2')).json()).toEqual({ name: 'two' })
    expect((await session(app)).pid).not.toBe(before.pid)
  })

  test("a request that drops onConnect's statement: the next request still has it (a new connection)", async () => {
    const { app } = await appWithPreparingOnConnect()
    const before = await session(app)
    await app.inject({ method: 'POST', url: '/run', payload: { sql: 'deallocate app_item' } })
    expect((await app.inject('/item/2')).json()).toEqual({ name: 'two' })
    expect((await session(app)).pid).not.toBe(before.pid)
  })
})

describe("the check's operators cannot be shadowed from the search_path the reset runs with", () => {
  test('a request puts text = text of its own ahead of pg_catalog: its PREPARE does not reach the next request', async () => {
    const name = new URL(db.directUrl).pathname.slice(1)
    await db.sql.unsafe(`alter database ${name} set search_path = app, pg_catalog, public`)
    try {
      current = await coreApp(db.url, { max: 1 })
      const { app } = current
      app.post('/shadow', async (request) => {
        await request.db.unsafe(`
          create or replace function app.always(text, text) returns bool language sql immutable as 'select true';
          create operator app.= (leftarg = text, rightarg = text, function = app.always);
          prepare leaked as select 'from A'`)
        return 'a'
      })
      app.get('/leaked', async (request) => {
        const [row] = await request.db<{ pid: number; leaked: number }[]>`
          select pg_backend_pid() as pid, (select count(*)::int from pg_prepared_statements
            where name operator(pg_catalog.=) 'leaked'::text) as leaked`
        return row
      })
      const before = (await app.inject('/leaked')).json()
      expect((await app.inject({ method: 'POST', url: '/shadow' })).statusCode).toBe(200)
      const after = (await app.inject('/leaked')).json()
      expect(after.leaked).toBe(0)
      expect(after.pid).not.toBe(before.pid)
    } finally {
      await db.sql.unsafe(`drop operator if exists app.= (text, text); alter database ${name} reset search_path`)
    }
  })
})

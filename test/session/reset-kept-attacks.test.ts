import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Hostile probing: requests that deallocate, replace or re-prepare the statements onConnect
// prepared, or drop prepared statements wholesale. Each is caught and the next request finds
// onConnect's statements as they were. All held.

let db: TestDatabase
let current: TestApp | undefined
let dbName: string

beforeAll(async () => {
  db = await createTestDatabase()
  dbName = new URL(db.directUrl).pathname.slice(1)
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

async function appWith(pool = {}) {
  current = await coreApp(
    db.url,
    { max: 1, ...pool },
    {},
    {
      onConnect: async (sql) => {
        await sql.unsafe(
          'prepare app_item (int) as select name from app.items where id = $1; prepare app_two as select 2 as n',
        )
      },
    },
  )
  const { app } = current
  app.get('/session', async (request) => {
    const [row] = await request.db<{ pid: number; statements: string[]; locks: number; texts: string[] }[]>`
      select pg_catalog.pg_backend_pid() as pid,
        coalesce((select pg_catalog.array_agg(name order by name) from pg_catalog.pg_prepared_statements
          where from_sql and pg_catalog.strpos(statement, 'pg_advisory_unlock_all') operator(pg_catalog.=) 0), '{}') as statements,
        coalesce((select pg_catalog.array_agg(statement order by name) from pg_catalog.pg_prepared_statements
          where from_sql and pg_catalog.strpos(statement, 'pg_advisory_unlock_all') operator(pg_catalog.=) 0), '{}') as texts,
        (select pg_catalog.count(*)::int from pg_catalog.pg_locks where locktype operator(pg_catalog.=) 'advisory'::pg_catalog.text and pid operator(pg_catalog.=) pg_catalog.pg_backend_pid()) as locks`
    return row
  })
  app.post('/run', async (request) => {
    await request.db.unsafe((request.body as { sql: string }).sql)
    return { ok: true }
  })
  return app
}

async function session(app: FastifyInstance) {
  const response = await app.inject('/session')
  expect(response.statusCode, response.body).toBe(200)
  return response.json() as { pid: number; statements: string[]; locks: number; texts: string[] }
}

const attacks: [string, string][] = [
  ['deallocate one kept, prepare another (count unchanged)', 'deallocate app_two; prepare other as select 3'],
  ['re-prepare a kept one with the same text', 'deallocate app_two; prepare app_two as select 2 as n'],
  [
    're-prepare both kept with other texts',
    "deallocate all; prepare app_item (int) as select 'evil'::text as name; prepare app_two as select 666 as n",
  ],
  ['DISCARD PLANS then PREPARE', 'discard plans; prepare leaked as select 1'],
  ['DISCARD PLANS, advisory lock', 'discard plans; select pg_advisory_lock(42)'],
  [
    'settings then PREPARE',
    "set timezone = 'Pacific/Chatham'; set datestyle = 'German, DMY'; set intervalstyle = 'iso_8601'; set standard_conforming_strings = off; set search_path = app, pg_catalog; prepare leaked as select 1",
  ],
  ['plpgsql EXECUTE PREPARE', "do $$ begin execute 'prepare leaked as select 1'; end $$"],
  ['PREPARE inside an open transaction left open', 'begin; prepare leaked as select 1'],
  ['PREPARE in a failed transaction', 'begin; prepare leaked as select 1; select 1/0'],
]

describe('a request changes the baseline or hides a PREPARE: the next request sees only what onConnect prepared', () => {
  test.each(attacks)('%s', async (_, sql) => {
    const app = await appWith()
    const before = await session(app)
    expect(before.statements).toEqual(['app_item', 'app_two'])
    await app.inject({ method: 'POST', url: '/run', payload: { sql } })
    const after = await session(app)
    expect(after.statements).toEqual(['app_item', 'app_two'])
    expect(after.texts).toEqual(before.texts)
    expect(after.locks).toBe(0)
    expect((await app.inject('/session')).statusCode).toBe(200)
  })

  const dbAttacks: [string, string][] = [
    [
      'ALTER DATABASE DateStyle/TimeZone/scs + DISCARD PLANS',
      // ISO, DMY since round thirteen: a DateStyle that is not ISO is refused when a connection opens.
      `alter database ${'$DB'} set datestyle = 'ISO, DMY'; alter database ${'$DB'} set timezone = 'Pacific/Chatham'; alter database ${'$DB'} set standard_conforming_strings = off; discard plans; prepare leaked as select 1`,
    ],
    [
      'ALTER DATABASE search_path app first, shadow types/operators/casts, DISCARD PLANS',
      `
      alter database ${'$DB'} set search_path = app, pg_catalog, public;
      create domain app.timestamptz as pg_catalog.timestamptz check (value is null);
      create domain app.int4 as pg_catalog.int4 check (value > 1000);
      create type app.text as (x int);
      create function app.t(pg_catalog.text, pg_catalog.text) returns bool language sql immutable as 'select true';
      create operator app.= (leftarg = pg_catalog.text, rightarg = pg_catalog.text, function = app.t);
      create function app.z(int, int) returns int language sql immutable as 'select 1';
      create operator app./ (leftarg = int, rightarg = int, function = app.z);
      create function app.b(bigint, int) returns bool language sql immutable as 'select true';
      create operator app.= (leftarg = bigint, rightarg = int, function = app.b);
      create function app.count() returns bigint language sql as 'select 2::bigint';
      create function app.pg_prepared_statement() returns setof record language sql as 'select 1';
      discard plans; prepare leaked as select 1`,
    ],
  ]
  test.each(dbAttacks)('%s', async (_, sql) => {
    try {
      const app = await appWith()
      const before = await session(app)
      await app.inject({ method: 'POST', url: '/run', payload: { sql: sql.replaceAll('$DB', dbName) } })
      const after = await session(app)
      expect(after.statements).toEqual(['app_item', 'app_two'])
      expect(after.pid).not.toBe(before.pid)
      // (what a fresh connection opened under these defaults does: baseline-capture.test.ts)
    } finally {
      await db.sql.unsafe(`alter database ${dbName} reset all; drop schema app cascade; create schema app;
        create table app.items (id int primary key, name text); insert into app.items values (1, 'one'), (2, 'two');`)
    }
  })
})

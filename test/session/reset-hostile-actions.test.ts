import type { FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Hostile probing of the session reset once its check became a statement prepared per connection:
// what a request can do to its session (drop or re-prepare statements, DISCARD PLANS, plan cache
// modes, a role without privileges, tiny timeouts, shadowing functions and operators in its
// search_path, a failed transaction, session characteristics), each followed by a PREPARE and an
// advisory lock; the next request must see a clean session. All held.

let db: TestDatabase
let current: TestApp
let app: FastifyInstance
let doA: (sql: FastifyInstance['db']) => Promise<unknown>
const low = `fpp_probe_min_${process.pid}`

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    do $$ begin if not exists (select from pg_roles where rolname = '${low}') then create role ${low} nologin; end if; end $$;
    create schema evil;
    grant usage, create on schema evil to ${low};
    grant usage, create on schema public to ${low};
    create table ledger (id int primary key, note text);
  `)
})
beforeEach(async () => {
  current = await coreApp(db.url, { max: 1 })
  app = current.app
  app.post('/a', async (request) => {
    await doA(request.db as unknown as FastifyInstance['db'])
    return { ok: true }
  })
  app.post('/a-tx', { config: { db: { transaction: true } } }, async (request) => {
    await doA(request.db as unknown as FastifyInstance['db'])
    return { ok: true }
  })
  app.get('/b', async (request) => {
    const [s] = await request.db<Record<string, unknown>[]>`
      select pg_backend_pid() as pid, current_user as "currentUser", session_user as "sessionUser",
        current_setting('search_path') as "searchPath",
        current_setting('plan_cache_mode') as "planCacheMode",
        current_setting('statement_timeout') as "statementTimeout",
        current_setting('lock_timeout') as "lockTimeout",
        (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as locks,
        (select count(*)::int from pg_class where relnamespace = pg_my_temp_schema()) as "tempObjects",
        (select count(*)::int from pg_prepared_statements where from_sql and left(name, 22) <> 'fastify_pg_pool_reset_') as prepared,
        (select count(*)::int from pg_prepared_statements where left(name, 22) = 'fastify_pg_pool_reset_') as "resetCheck",
        (select count(*)::int from pg_listening_channels()) as listening,
        (select count(*)::int from pg_cursors where is_holdable) as cursors`
    return s
  })
})
afterEach(async () => {
  await current?.app.close()
})
afterAll(async () => {
  await db.drop()
  const admin = postgres(inject('adminUrl'), { max: 1, onnotice: () => {} })
  await admin.unsafe(`drop role if exists ${low}`).catch(() => {})
  await admin.end()
})

const clean = {
  currentUser: 'postgres',
  sessionUser: 'postgres',
  searchPath: '"$user", public',
  planCacheMode: 'auto',
  statementTimeout: '30s',
  lockTimeout: '0',
  locks: 0,
  tempObjects: 0,
  prepared: 0,
  resetCheck: 1,
  listening: 0,
  cursors: 0,
}

async function probe() {
  const r = await app.inject('/b')
  expect(r.statusCode, r.body).toBe(200)
  return r.json() as Record<string, unknown>
}

const leak = async (sql: FastifyInstance['db']) => {
  await sql`select pg_advisory_lock(5151)`
  await sql.unsafe('prepare leaked_stmt as select 1')
}

const cases: [string, (sql: FastifyInstance['db']) => Promise<unknown>][] = [
  [
    'DISCARD PLANS then a PREPARE',
    async (sql) => {
      await sql.unsafe('discard plans')
      await leak(sql)
    },
  ],
  [
    'plan_cache_mode force_custom_plan then a PREPARE',
    async (sql) => {
      await sql.unsafe('set plan_cache_mode = force_custom_plan')
      await leak(sql)
    },
  ],
  [
    'plan_cache_mode force_generic_plan then a PREPARE',
    async (sql) => {
      await sql.unsafe('set plan_cache_mode = force_generic_plan')
      await leak(sql)
    },
  ],
  [
    'SET ROLE to a role with no privileges, advisory lock, PREPARE',
    async (sql) => {
      await sql`select pg_advisory_lock(5151)`
      await sql.unsafe(`set role ${low}`)
      await sql.unsafe('prepare leaked_stmt as select 1')
    },
  ],
  [
    'SET SESSION AUTHORIZATION to a role with no privileges, then advisory lock',
    async (sql) => {
      await sql.unsafe(`set session authorization ${low}`)
      await sql`select pg_advisory_lock(5151)`
    },
  ],
  [
    'tiny statement_timeout and lock_timeout, advisory lock',
    async (sql) => {
      await sql`select pg_advisory_lock(5151)`
      await sql.unsafe("set statement_timeout = '1ms'; set lock_timeout = '1ms'")
    },
  ],
  [
    'search_path to a schema with shadowing functions and operators',
    async (sql) => {
      await sql.unsafe(`
      create or replace function evil.pg_advisory_unlock_all() returns void language sql as 'select null::void';
      create or replace function evil.pg_prepared_statement() returns setof record language sql as 'select null::record where false';
      create or replace function evil.txteq(text, text) returns bool language sql as 'select true';
      do $$ begin create operator evil.= (leftarg = text, rightarg = text, function = evil.txteq); exception when duplicate_object then null; end $$;
      set search_path = evil, pg_catalog, public`)
      await leak(sql)
      await sql.unsafe('discard plans')
    },
  ],
  [
    'DEALLOCATE ALL then re-PREPARE own statements',
    async (sql) => {
      await sql`select pg_advisory_lock(5151)`
      await sql.unsafe('deallocate all')
      await sql.unsafe('prepare a1 as select 1; prepare a2 as select 2')
    },
  ],
  [
    'DISCARD ALL then a temp table and an advisory lock',
    async (sql) => {
      await sql.unsafe('discard all')
      await sql.unsafe('create temp table t1 (x int); select pg_advisory_lock(5151)')
    },
  ],
  [
    'a cursor WITH HOLD over pg_prepared_statements + advisory lock',
    async (sql) => {
      await sql.unsafe(
        'declare c cursor with hold for select * from pg_prepared_statements; select pg_advisory_lock(5151)',
      )
    },
  ],
  [
    'EXECUTE of the reset check by the request (its name read back)',
    async (sql) => {
      await sql.unsafe(
        `do $$ begin execute 'execute ' || (select name from pg_prepared_statements where left(name, 22) = 'fastify_pg_pool_reset_'); end $$`,
      )
      await leak(sql)
    },
  ],
  [
    'an open transaction with a failed statement and a PREPARE before',
    async (sql) => {
      await sql.unsafe('prepare leaked_stmt as select 1')
      await sql.unsafe('begin')
      await sql`select pg_advisory_lock(5151)`
      await sql`select 1/0`.catch(() => {})
    },
  ],
  [
    'SET SESSION CHARACTERISTICS read only, serializable, deferrable, then PREPARE',
    async (sql) => {
      await sql.unsafe('set session characteristics as transaction isolation level serializable, read only, deferrable')
      await leak(sql)
    },
  ],
  [
    'default_transaction_read_only + a temp table',
    async (sql) => {
      await sql.unsafe('create temp table t2 (x int)')
      await sql.unsafe('set default_transaction_read_only = on')
      await sql`select pg_advisory_lock(5151)`
    },
  ],
]

describe('request actions around the prepared check', () => {
  for (const [name, action] of cases) {
    for (const route of ['/a', '/a-tx']) {
      test(`${name} (${route})`, async () => {
        await probe()
        doA = action
        const a = await app.inject({ method: 'POST', url: route })
        // A's own failure is its business; what matters is B.
        const after = await probe()
        expect(after, `A: ${a.statusCode} ${a.body}`).toMatchObject(clean)
        const [free] = await db.sql`select pg_try_advisory_lock(5151) as ok`
        expect(free?.ok).toBe(true)
        await db.sql`select pg_advisory_unlock(5151)`
        // And C too (the connection after a retire is sane).
        expect(await probe()).toMatchObject(clean)
      })
    }
  }
})

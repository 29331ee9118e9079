import pgPoolHealth from '@fastify-pg-pool/health'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Issue 19: a per-connection init hook, run once on each new server connection, distinct from
// the per-request onLease; the session reset brings every request back to what it set.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create schema app;
    create table app.items (name text);
    insert into app.items values ('from app schema');
    do $$ begin
      if not exists (select from pg_roles where rolname = 'fpp_connect_reader') then create role fpp_connect_reader; end if;
    end $$;
    grant usage on schema app to fpp_connect_reader;
    grant select on app.items to fpp_connect_reader;
  `)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

describe('onConnect', () => {
  test('runs once per new connection; every request sees its settings, even after one changed them', async () => {
    let calls = 0
    current = await coreApp(
      db.url,
      { max: 2 },
      {},
      {
        onConnect: async (sql) => {
          calls++
          await sql`set search_path to app, public`
          await sql`set timezone to 'Europe/Paris'`
        },
      },
    )
    const { app } = current
    app.get('/state', async (request) => {
      const [row] = await request.db`
        select current_setting('search_path') as path, current_setting('timezone') as zone,
          (select name from items) as item, pg_backend_pid() as pid`
      return row
    })
    app.get('/meddle', async (request) => {
      await request.db`set search_path to public`
      await request.db`select set_config('timezone', 'UTC', false)`
      return 'ok'
    })
    const first = (await app.inject('/state')).json()
    expect(first).toMatchObject({ path: 'app, public', zone: 'Europe/Paris', item: 'from app schema' })
    expect((await app.inject('/meddle')).statusCode).toBe(200)
    for (let i = 0; i < 3; i++) {
      expect((await app.inject('/state')).json()).toMatchObject({ path: 'app, public', zone: 'Europe/Paris' })
    }
    // One connection served every request here: onConnect ran once for it (the start-up check's).
    expect(calls).toBe(app.pgPool.stats().open)
  })

  test('a role set by onConnect is kept across resets; one a request set is not', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onConnect: async (sql) => void (await sql`set role fpp_connect_reader`),
      },
    )
    const { app } = current
    app.get('/who', async (request) => (await request.db`select current_user as who`)[0])
    app.get('/become', async (request) => request.db.unsafe('set role postgres'))
    expect((await app.inject('/who')).json()).toEqual({ who: 'fpp_connect_reader' })
    await app.inject('/become')
    expect((await app.inject('/who')).json()).toEqual({ who: 'fpp_connect_reader' })
  })

  // The ping opened its connection without onConnect: with the role onConnect sets dropped, every
  // pool connection failed and /health/ready still answered 200 pass.
  test('runs for the health ping too: an onConnect that starts failing fails the ping and readiness', async () => {
    let failing = false
    let calls = 0
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onConnect: async (sql) => {
          calls++
          if (failing) throw new Error('the role this app sets is gone')
          await sql`set role fpp_connect_reader`
        },
      },
    )
    const { app } = current
    await app.register(pgPoolHealth, { cacheTime: 0 })
    expect((await app.inject('/health/ready')).statusCode).toBe(200)
    const before = calls
    await app.pgPool.ping(2_000)
    expect(calls).toBe(before + 1)

    failing = true
    await expect(app.pgPool.ping(2_000)).rejects.toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED' })
    const ready = await app.inject('/health/ready')
    expect({ status: ready.statusCode, body: ready.json().status }).toEqual({ status: 503, body: 'fail' })
  })

  test('an onConnect that throws fails register with FST_PG_POOL_CONNECT_FAILED, its error as the cause', async () => {
    const failure = await coreApp(
      db.url,
      {},
      {},
      {
        onConnect: async () => {
          throw new Error('no schema for this tenant')
        },
      },
    ).then(
      () => undefined,
      (error: Error & { code?: string }) => error,
    )
    expect(failure?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect(String((failure?.cause as Error | undefined)?.message)).toContain('no schema for this tenant')
  })
})

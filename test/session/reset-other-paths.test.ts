import pgPoolCore from '@fastify-pg-pool/core'
import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Hostile probing of the session reset on the other ways to hold a connection: a read-only route
// on the primary, a read-only serializable deferrable route transaction, a named instance, app.db.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table items (id int primary key, name text)`
  await db.sql`insert into items values (1, 'one')`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop()
})

const probeSql = (sql: FastifyInstance['db']) => sql<Record<string, unknown>[]>`
  select pg_backend_pid() as pid, current_user as "user",
    (select count(*)::int from pg_prepared_statements where from_sql and left(name, 22) <> 'fastify_pg_pool_reset_') as prepared,
    (select count(*)::int from pg_prepared_statements where left(name, 22) = 'fastify_pg_pool_reset_') as "check",
    (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as locks`

describe('other paths that hold a connection', () => {
  test('read-only route (served by the primary), named instance and app.db: DEALLOCATE ALL / PREPARE / lock never reach the next holder', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    await app.register(pgPoolCore, {
      name: 'other',
      connection: db.url,
      pool: { max: 1, applicationName: `${current.applicationName}-o` },
    })
    const dirty = async (sql: FastifyInstance['db']) => {
      await sql`select pg_advisory_lock(6161)`
      await sql.unsafe('deallocate all')
      await sql.unsafe('prepare x1 as select 1')
    }
    app.get('/ro', { config: { db: { readOnly: true } } }, async (request) => {
      await dirty(request.db as unknown as FastifyInstance['db'])
      return 'ok'
    })
    app.get(
      '/ro-tx',
      { config: { db: { transaction: { readOnly: true, isolation: 'serializable', deferrable: true } } } },
      async (request) => {
        await dirty(request.db as unknown as FastifyInstance['db'])
        return 'ok'
      },
    )
    app.get('/other', { config: { db: { instance: 'other' } } }, async (request) => {
      await dirty(request.db as unknown as FastifyInstance['db'])
      return 'ok'
    })
    app.get('/probe', async (request) => (await probeSql(request.db as unknown as FastifyInstance['db']))[0])
    app.get(
      '/probe-other',
      { config: { db: { instance: 'other' } } },
      async (request) => (await probeSql(request.db as unknown as FastifyInstance['db']))[0],
    )
    await app.ready()
    const clean = { user: 'postgres', prepared: 0, check: 1, locks: 0 }
    for (const url of ['/ro', '/ro-tx']) {
      const r = await app.inject(url)
      expect(r.statusCode, `${url} ${r.body}`).toBe(200)
      expect((await app.inject('/probe')).json()).toMatchObject(clean)
    }
    expect((await app.inject('/other')).statusCode).toBe(200)
    expect((await app.inject('/probe-other')).json()).toMatchObject(clean)
    // app.db outside a request
    await dirty(app.db)
    expect((await probeSql(app.db))[0]).toMatchObject(clean)
    expect((await app.inject('/probe')).json()).toMatchObject(clean)
    const [free] = await db.sql`select pg_try_advisory_lock(6161) as ok`
    expect(free?.ok).toBe(true)
    await db.sql`select pg_advisory_unlock(6161)`
  })
})

// DEFECT (probe-errors, medium). What the user does: connects the core to a primary through a host
// list (`postgres://app@db-a:5432,db-b:5432/app`, the README's failover setup) and, on a healthy
// primary, runs a write the server refuses with 25006 read_only_sql_transaction for a reason of
// the app's own: a route transaction whose handler runs `set transaction read only` (a report
// that must not write), a session made read-only with `set default_transaction_read_only = on`
// (or a role/database configured so: `alter role reporting set default_transaction_read_only =
// on`, a database put read-only for maintenance), a simple-protocol `begin read only; ...`, or a
// PL/pgSQL function raising `using errcode = '25006'`.
// What they see: 503 FST_PG_POOL_NOT_PRIMARY "The database server is not the primary (a failover
// is under way); retry later" with Retry-After, on a server that is the primary and stays so: a
// client told to retry gets the same 503 forever, the log says a failover is under way when none
// is, and every such request retires its connection (stats: open 0 after each), so each costs a
// new server connection (a connection-churn amplifier under load).
// What they should see: the request's own 25006 (code '25006', 500 by the default mapping, as on a
// single-host pool and as the README's table says for "anything else"), the connection kept.
// Cause: packages/core/src/lease.ts ~l.815-830: any 25006 on a `writable` lease (a host-list
// primary, pool-unit.ts:170) that is not a route/begin() transaction the suite itself opened read
// only (#readOnlyTransaction, l.278) is taken for a failover; the SQL's own read-only modes
// (SET TRANSACTION, default_transaction_read_only, BEGIN READ ONLY in SQL, a raised 25006) are
// not told apart from a standby's refusal.
// Suggested fix: before answering NOT_PRIMARY, ask the connection (`select pg_is_in_recovery()`,
// or read the `in_hot_standby` parameter PostgreSQL 14+ reports) and only retire it and answer
// NOT_PRIMARY when it is in recovery; otherwise surface the 25006 like any other SQLSTATE.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
let app: FastifyInstance | undefined

/** The test database as a two-host list (the same server twice): a primary that can fail over. */
function hostList(url: string): string {
  const parsed = new URL(url)
  const hostPort = `${parsed.hostname}:${parsed.port}`
  return url.replace(hostPort, `${hostPort},${hostPort}`)
}

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table items (id serial primary key, v text);
    create function refuse_write() returns void language plpgsql as
      $f$ begin raise exception 'this tenant is frozen' using errcode = '25006'; end $f$;
  `)
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db?.drop())

async function hostListApp(): Promise<FastifyInstance> {
  app = Fastify()
  await app.register(pgPoolCore, { connection: hostList(db.url), pool: { max: 2 } })
  app.post('/report', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`set transaction read only`
    await request.db`insert into items (v) values ('report')`
    return { ok: true }
  })
  app.post('/session', async (request) => {
    await request.db`set default_transaction_read_only = on`
    return request.db`insert into items (v) values ('session')`
  })
  app.post('/function', async (request) => request.db`select refuse_write()`)
  return app
}

describe("a healthy host-list primary: the app's own 25006 is not a failover", () => {
  for (const url of ['/report', '/session', '/function']) {
    test(`${url}: the 25006 of the request's own read-only SQL, the connection kept`, async () => {
      const server = await hostListApp()
      await server.ready()
      const openBefore = server.pgPool.stats().open
      expect(openBefore).toBeGreaterThan(0)
      const response = await server.inject({ method: 'POST', url })
      // The server is the primary: not a failover.
      const [row] = await db.sql<{ recovery: boolean }[]>`select pg_is_in_recovery() as recovery`
      expect(row?.recovery).toBe(false)
      expect(response.json().code).toBe('25006')
      expect(response.statusCode).toBe(500)
      expect(response.headers['retry-after']).toBeUndefined()
      expect(server.pgPool.stats().open).toBe(openBefore)
    })
  }

  test('a database put read-only (default_transaction_read_only): 25006 as on a single host, not NOT_PRIMARY', async () => {
    // test/faults/server-settings.test.ts asserts this 25006 on a single-host pool; a host list
    // (the README's failover setup) answers a failover instead.
    const name = new URL(db.directUrl).pathname.slice(1)
    await db.admin.unsafe(`alter database ${name} set default_transaction_read_only = on`)
    try {
      app = Fastify()
      await app.register(pgPoolCore, { connection: hostList(db.url), pool: { max: 2 } })
      app.post('/write', async (request) => request.db`insert into items (v) values ('maintenance')`)
      const response = await app.inject({ method: 'POST', url: '/write' })
      expect(response.json().code).toBe('25006')
      expect(response.statusCode).toBe(500)
    } finally {
      await db.admin.unsafe(`alter database ${name} reset default_transaction_read_only`)
    }
  })
})

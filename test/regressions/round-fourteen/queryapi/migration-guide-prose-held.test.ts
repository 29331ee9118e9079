import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

// HELD (probe-queryapi): what docs/migrating-from-fastify-postgres.md says in prose, outside the
// samples test/docs/migration-guide.test.ts runs, taken literally:
// - pg names inside `pool` (idleTimeoutMillis, maxLifetimeSeconds, connectionTimeoutMillis) and
//   `connection: { connectionString }` are refused at register with FST_PG_POOL_INVALID_OPTION,
//   naming the option meant; `connection: { host, port, username, password, database }` connects;
// - `pool.maxLifetime` defaults to 30 min, `pool.statementTimeout` to 30 s;
// - `release()` may be called more than once; a query on a released lease throws FST_PG_POOL_RELEASED;
// - `{ pg: { transact: 'foo' } }` becomes `config.db: { transaction: true, instance: 'foo' }`, and
//   `request.dbs.foo` there is `request.db` (same connection, the route's transaction);
// - results are arrays of rows with `count` and `command`; bigint and numeric come back as strings.

let db: TestDatabase
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table users (id serial primary key, username text not null unique)`
})
afterAll(() => db?.drop())

async function registerOutcome(
  options: Record<string, unknown>,
): Promise<{ code?: string | undefined; message?: string }> {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, options as never)
    await app.ready()
    return { message: JSON.stringify(app.pgPool.options) }
  } catch (error) {
    return { code: (error as { code?: string }).code, message: (error as Error).message }
  } finally {
    await app.close()
  }
}

describe('registering', () => {
  const refused: [string, Record<string, unknown>, RegExp][] = [
    [
      'pool.idleTimeoutMillis',
      { pool: { idleTimeoutMillis: 1 } },
      /pool\.idleTimeoutMillis.*did you mean idleTimeout\?/,
    ],
    [
      'pool.maxLifetimeSeconds',
      { pool: { maxLifetimeSeconds: 1 } },
      /pool\.maxLifetimeSeconds.*did you mean maxLifetime\?/,
    ],
    [
      'pool.connectionTimeoutMillis',
      { pool: { connectionTimeoutMillis: 1 } },
      /pool\.connectionTimeoutMillis.*did you mean connectTimeout\?/,
    ],
  ]
  for (const [name, options, message] of refused) {
    test(`${name} is refused, naming the option meant`, async () => {
      const outcome = await registerOutcome({ connection: db.url, ...options })
      expect(outcome.code).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(outcome.message).toMatch(message)
    })
  }

  test('connection: { connectionString } is refused; { host, port, username, password, database } connects', async () => {
    const refusedOutcome = await registerOutcome({ connection: { connectionString: db.url } })
    expect(refusedOutcome.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(refusedOutcome.message).toMatch(/connection\.connectionString/)
    const url = new URL(db.url)
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: {
        host: url.hostname,
        port: Number(url.port),
        username: decodeURIComponent(url.username),
        password: decodeURIComponent(url.password),
        database: url.pathname.slice(1),
      },
    })
    await app.ready()
    try {
      expect(await app.db`select current_database() as d`).toEqual([{ d: url.pathname.slice(1) }])
      expect(app.pgPool.options).toMatchObject({ maxLifetime: 30 * 60_000, statementTimeout: 30_000 })
    } finally {
      await app.close()
    }
  })
})

describe('queries and transactions', () => {
  test("release twice, RELEASED after; instance 'foo' transaction route; rows.count; bigint and numeric strings", async () => {
    const app = Fastify()
    await app.register(pgPoolCore, { connection: db.url, pool: { max: 2 } })
    await app.register(pgPoolCore, { name: 'foo', connection: db.url, pool: { max: 2 } })
    app.post('/users', { config: { db: { transaction: true, instance: 'foo' } } }, async (request, reply) => {
      const foo = request.dbs.foo
      if (foo === undefined) throw new Error('request.dbs.foo is missing')
      const [a] = await request.db`select pg_backend_pid() as pid, txid_current() as tx`
      const [b] = await foo`select pg_backend_pid() as pid, txid_current() as tx`
      const inserted = await foo`insert into users (username) values ('ada'), ('grace')`
      if ((request.body as { fail?: boolean }).fail) return reply.code(409).send({ refused: true })
      return {
        same: foo === request.db,
        sameSession: a?.pid === b?.pid && a?.tx === b?.tx,
        count: inserted.count,
        command: inserted.command,
      }
    })
    app.get('/types', async (request) => {
      const [row] =
        await request.db`select 9007199254740993::int8 as big, 1.10::numeric as num, count(*) as n from users`
      return { big: typeof row?.big, num: row?.num, n: typeof row?.n }
    })
    await app.ready()
    try {
      const refused = await app.inject({ method: 'POST', url: '/users', payload: { fail: true } })
      expect(refused.statusCode).toBe(409)
      expect(await db.sql`select * from users`).toEqual([])
      const ok = await app.inject({ method: 'POST', url: '/users', payload: {} })
      expect(ok.json()).toEqual({ same: true, sameSession: true, count: 2, command: 'INSERT' })
      expect((await app.inject('/types')).json()).toEqual({ big: 'string', num: '1.10', n: 'string' })
      const lease = await app.db.lease()
      await lease`select 1`
      await lease.release()
      await lease.release()
      const after = await lease`select 1`.then(
        () => 'ran',
        (error: { code?: string }) => error.code,
      )
      expect(after).toBe('FST_PG_POOL_RELEASED')
    } finally {
      await app.close()
    }
  })
})

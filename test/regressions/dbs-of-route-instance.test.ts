import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

// Found by hostile probing (failed before the fix): on a route whose request.db is a named instance (`config.db: { transaction: true,
// instance: 'reporting' }`), `request.dbs.reporting` is a second, separate lease on the same
// instance: its statements run on another connection, outside the route transaction, and a
// request holding one connection waits for a second one of the same pool.
//
// Expected: docs/migrating-from-fastify-postgres.md l.30 maps `{ pg: { transact: 'foo' } }`,
// `req.pg.foo` to `config.db: { instance: 'foo' }`, `request.dbs.foo` (with @fastify/postgres
// req.pg.foo IS the route's transaction client); packages/core/README.md l.64 "All queries of
// one request run on one connection, in order", and the route-options table: `{ transaction:
// true }` "the whole request is one transaction".
//
// What happened before the fix: `request.dbs.<name>` always builds its own lease keyed by name
// (request-lease.ts #other, l.174-182), never the main lease even when the main lease is on that
// instance. (1) A 409 rolls back request.db's write but the request.dbs write stays committed.
// (2) With pool.max 1 the request deadlocks on itself until acquireTimeout (503); with max N,
// N such requests at once deadlock the whole pool the same way.

type Sql = (strings: TemplateStringsArray, ...values: unknown[]) => Promise<Record<string, unknown>[]>
let main: TestDatabase
let reporting: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  main = await createTestDatabase()
  reporting = await createTestDatabase()
  await reporting.sql`create table note (body text not null)`
})
beforeEach(async () => {
  await reporting.sql`truncate note`
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(async () => {
  await main.drop()
  await reporting.drop()
})

async function twoInstances(max: number): Promise<FastifyInstance> {
  const created = Fastify()
  await created.register(pgPoolCore, { connection: main.url, pool: { max: 1, applicationName: uniqueName() } })
  await created.register(pgPoolCore, {
    name: 'reporting' as never,
    connection: reporting.url,
    pool: { max, acquireTimeout: 800, applicationName: uniqueName() },
  })
  return created
}
const reportingTx = { config: { db: { transaction: true, instance: 'reporting' as never } } } as const
const notes = async () =>
  (await reporting.sql<{ body: string }[]>`select body from note order by body`).map((r) => r.body)
const dbsOf = (request: unknown) => (request as unknown as { dbs: { reporting: Sql } }).dbs

describe('request.dbs.<name> on a route whose request.db is <name>', () => {
  test('its writes are part of the route transaction: a 409 rolls both back', async () => {
    app = await twoInstances(2)
    app.post('/both', reportingTx, async (request, reply) => {
      await request.db`insert into note values ('via request.db')`
      await dbsOf(request).reporting`insert into note values ('via request.dbs.reporting')`
      return reply.code(409).send({ conflict: true })
    })
    const response = await app.inject({ method: 'POST', url: '/both' })
    expect(response.statusCode).toBe(409)
    expect(await notes()).toEqual([]) // before the fix: ['via request.dbs.reporting']
  })

  test('it needs no second connection: with pool.max 1 the request is served', async () => {
    app = await twoInstances(1)
    app.post('/both', reportingTx, async (request) => {
      await request.db`insert into note values ('a')`
      await dbsOf(request).reporting`insert into note values ('b')`
      return { ok: true }
    })
    const response = await app.inject({ method: 'POST', url: '/both' })
    expect(response.json()).toEqual({ ok: true }) // before the fix: 503 FST_PG_POOL_ACQUIRE_TIMEOUT
  })
})

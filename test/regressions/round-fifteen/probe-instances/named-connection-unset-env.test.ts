import Fastify, { type FastifyInstance } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

// What the user does: what the umbrella README shows for a second database,
//   await app.register(pgPool, { connection: process.env.DATABASE_URL })
//   await app.register(pgPool, { name: 'analytics', connection: process.env.ANALYTICS_URL })
// deployed where ANALYTICS_URL is not set (a typo in the manifest, a secret not mounted).
// What they should get: the registration refused (FST_PG_POOL_INVALID_OPTION naming `connection`):
// `connection` was given, and its value is missing.
// What they got: `connection: undefined` reads as no connection at all, so the named instance
// falls back to DATABASE_URL, the default instance's database: the app starts, /health passes,
// and every write through app.dbs.analytics / request.dbs.analytics lands in the main database.

const saved = process.env.DATABASE_URL
let main: TestDatabase
let analytics: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  main = await createTestDatabase()
  analytics = await createTestDatabase()
  // The same table in both (a schema shared by both databases, or migrations run on each).
  await main.sql`create table events (id serial primary key, note text)`
  await analytics.sql`create table events (id serial primary key, note text)`
})
afterEach(async () => {
  await app?.close().catch(() => {})
  app = undefined
  if (saved === undefined) delete process.env.DATABASE_URL
  else process.env.DATABASE_URL = saved
})
afterAll(async () => {
  await main.drop()
  await analytics.drop()
})

test("a named instance whose connection is an unset variable is refused, never pointed at DATABASE_URL's database", async () => {
  process.env.DATABASE_URL = main.url
  delete process.env.ANALYTICS_URL_NOT_SET
  app = Fastify()
  const instance = app
  const outcome = await (async () => {
    try {
      await instance.register(pgPool, { connection: process.env.DATABASE_URL })
      await instance.register(pgPool, { name: 'analytics', connection: process.env.ANALYTICS_URL_NOT_SET })
      await instance.ready()
    } catch (error) {
      return { refused: (error as { code?: string }).code }
    }
    await (instance.dbs.analytics as NonNullable<typeof instance.dbs.analytics>)`insert into events (note) values ('x')`
    const [inMain] = await main.sql<{ n: number }[]>`select count(*)::int as n from events`
    return { refused: undefined, rowsWrittenToTheMainDatabase: inMain?.n }
  })()
  expect(outcome).toEqual({ refused: 'FST_PG_POOL_INVALID_OPTION' })
})

test('held: a named instance registered without the key (a second pool on the same database) still uses DATABASE_URL', async () => {
  process.env.DATABASE_URL = main.url
  app = Fastify()
  await app.register(pgPool, { connection: process.env.DATABASE_URL })
  await app.register(pgPool, { name: 'jobs' })
  const [row] = await (app.dbs.jobs as NonNullable<typeof app.dbs.jobs>)<
    { db: string }[]
  >`select current_database() as db`
  expect(row?.db).toBe(new URL(main.directUrl).pathname.slice(1))
})

import Fastify, { type FastifyInstance } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

// What the user does: registers a second database from a config loader that gives null for a
// setting that is missing (`config.get('analytics.url')`, `process.env.ANALYTICS_URL ?? null`, a
// YAML `url: ~`), as this round's fix (200695a) covers for `undefined`:
//   await app.register(pgPool, { name: 'analytics', connection: config.analyticsUrl })
// What they should get: the registration refused (FST_PG_POOL_INVALID_OPTION naming
// `connection`), as for undefined.
// What they got: `connection: null` passes the new check (`=== undefined`) and reads as no
// connection: the named instance falls back to DATABASE_URL, the default instance's database, and
// every write through app.dbs.analytics lands there.

const saved = process.env.DATABASE_URL
let main: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  main = await createTestDatabase()
  await main.sql`create table events (id serial primary key, note text)`
})
afterEach(async () => {
  await app?.close().catch(() => {})
  app = undefined
  if (saved === undefined) delete process.env.DATABASE_URL
  else process.env.DATABASE_URL = saved
})
afterAll(async () => main.drop())

test("a named instance given connection: null is refused, never pointed at DATABASE_URL's database", async () => {
  process.env.DATABASE_URL = main.url
  const config: { analyticsUrl: string | null } = { analyticsUrl: null }
  app = Fastify()
  const instance = app
  const outcome = await (async () => {
    try {
      await instance.register(pgPool, { connection: process.env.DATABASE_URL })
      await instance.register(pgPool, { name: 'analytics', connection: config.analyticsUrl as unknown as string })
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

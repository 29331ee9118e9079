import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

// Found by hostile probing (failed before the fix): a named instance registered inside an encapsulated plugin that loads before the
// default instance's registration (registration order in the root) splits the app in two:
// routes of that plugin get FST_PG_POOL_UNKNOWN_INSTANCE from request.db although the default
// instance is registered on the root, and root routes cannot reach the named instance through
// request.dbs (a TypeError, not a coded error).
//
// Expected: packages/fastify-pg-pool/README.md l.110-117: the second database is
// `request.dbs.<name>` and a registration "inside an encapsulated plugin" counts "as much as one
// beside it"; packages/core/README.md l.723: FST_PG_POOL_UNKNOWN_INSTANCE only when the instance
// "is not registered". The test with the opposite order (test/regressions/
// named-instance-in-child-context.test.ts, default first) works.
//
// What happened before the fix: plugin.ts sharedOf (l.80-89 at the time of writing) looks for the shared registry on the
// instance it was given; the child that loads first finds none (the root has none yet) and
// creates its own Instances and RequestLeases, decorating request.db/request.dbs on the child.
// The root's later registration creates a second registry. The child's request.db getter
// shadows the root's, and knows no default instance; the root's request.dbs knows no 'other'.

type Sql = (strings: TemplateStringsArray, ...values: unknown[]) => Promise<Record<string, unknown>[]>
let main: TestDatabase
let other: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  main = await createTestDatabase()
  other = await createTestDatabase()
  await main.sql`create table which (name text)`
  await main.sql`insert into which values ('main')`
  await other.sql`create table which (name text)`
  await other.sql`insert into which values ('other')`
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(async () => {
  await main.drop()
  await other.drop()
})

async function build(): Promise<FastifyInstance> {
  const created = Fastify()
  created.register(async (child) => {
    await child.register(pgPoolCore, {
      name: 'other' as never,
      connection: other.url,
      pool: { max: 1, applicationName: uniqueName() },
    })
    child.get('/child-default', async (request) => (await request.db`select name from which`)[0])
    child.get(
      '/child-other',
      async (request) => (await (request.dbs as unknown as { other: Sql }).other`select name from which`)[0],
    )
  })
  created.register(pgPoolCore, { connection: main.url, pool: { max: 1, applicationName: uniqueName() } })
  created.get(
    '/root-other',
    async (request) => (await (request.dbs as unknown as { other: Sql }).other`select name from which`)[0],
  )
  await created.ready()
  return created
}

describe('a named instance in a child plugin that loads before the default instance', () => {
  test("the child's routes reach the default instance through request.db", async () => {
    app = await build()
    expect((await app.inject('/child-other')).json()).toEqual({ name: 'other' }) // control: works
    const response = await app.inject('/child-default')
    expect(response.json()).toEqual({ name: 'main' }) // before the fix: 500 FST_PG_POOL_UNKNOWN_INSTANCE
  })

  test('root routes reach the named instance through request.dbs', async () => {
    app = await build()
    const response = await app.inject('/root-other')
    expect(response.json()).toEqual({ name: 'other' }) // before the fix: 500 "request.dbs.other is not a function"
  })
})

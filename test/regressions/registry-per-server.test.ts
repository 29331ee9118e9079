import { createServer, type Server } from 'node:http'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

// Found by hostile probing, second round (failed before the fix): the registry shared by one app's registrations is now
// keyed by `app.server` in a process-wide WeakMap (plugin.ts sharedOf) and never dropped on close.
// Fastify's `serverFactory` lets an app run on a server the caller owns; a server is reused by a
// new app after `app.close()` (a dev reload that keeps its port and listening socket), or given
// to two apps. Each of these new apps is a different Fastify app.
//
// Expected: a new Fastify app registers its default instance as any app does
// (packages/core/README.md; FST_PG_POOL_INVALID_OPTION 'name' is for a second default instance of
// the SAME app: "an instance without a name is registered already").
//
// What happened before the fix: the second app finds the first app's registry under the same server
// object (its instances are still in it, closed) and its `await app.register(pgPoolCore, ...)`
// throws FST_PG_POOL_INVALID_OPTION "an instance without a name is registered already". Had it
// registered a named instance instead, its request.db would be the first (closed) app's default.

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

function appOn(server: Server): FastifyInstance {
  return Fastify({
    serverFactory: (handler) => {
      server.removeAllListeners('request')
      server.on('request', handler)
      return server
    },
  })
}

describe('a server reused by a new Fastify app (serverFactory)', () => {
  test('after the first app closed, the new app registers the core and queries', async () => {
    const server = createServer()
    const first = appOn(server)
    await first.register(pgPoolCore, { connection: db.url, pool: { max: 1, applicationName: uniqueName() } })
    first.get('/', async (request) => (await request.db`select 1 as n`)[0])
    expect((await first.inject('/')).json()).toEqual({ n: 1 })
    await first.close()

    const second = appOn(server)
    try {
      // before the fix: throws FST_PG_POOL_INVALID_OPTION "an instance without a name is registered already"
      await second.register(pgPoolCore, { connection: db.url, pool: { max: 1, applicationName: uniqueName() } })
      second.get('/', async (request) => (await request.db`select 2 as n`)[0])
      expect((await second.inject('/')).json()).toEqual({ n: 2 })
    } finally {
      await second.close().catch(() => {})
    }
  })
})

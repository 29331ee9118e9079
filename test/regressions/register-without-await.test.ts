import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'

// Found by hostile probing (failed before the fix): with the usual Fastify style of registering a
// plugin without `await` and declaring routes right after it, a transaction route's
// reply.hijack() was not gated: the raw 200 left before the COMMIT, and a COMMIT that then failed
// was only logged (client told 200, nothing committed). The gate was added by an `onRoute` hook,
// which Fastify runs when a route is declared: before the plugin had loaded. It is now set by an
// onRequest hook, which Fastify adds to every route it builds after the plugin loaded.
//
// What stays (packages/core/README.md, "Route options"): such a route's `config.db` cannot be
// validated at its declaration either; a misspelled key answers each of its requests with a 500
// FST_PG_POOL_INVALID_OPTION, and nothing runs.

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table parent (id int primary key)`
  await db.sql`create table child (id int primary key,
    parent_id int references parent (id) deferrable initially deferred)`
  await db.sql`create table note (body text not null)`
})
beforeEach(async () => {
  await db.sql`truncate note, child, parent`
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

const notes = async () => (await db.sql<{ body: string }[]>`select body from note`).map((r) => r.body)
const tx = { config: { db: { transaction: true } } } as const

describe('app.register(core) without await, routes declared right after', () => {
  test("a transaction route's hijacked raw 200 waits for the COMMIT (here: a failing one)", async () => {
    app = Fastify()
    app.register(pgPoolCore, { connection: db.url, pool: { max: 1, applicationName: uniqueName() } })
    app.post('/hijacked', tx, async (request, reply) => {
      await request.db`insert into note values ('hijacked')`
      await request.db`insert into child values (1, 999)` // the COMMIT will fail
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.end('done')
    })
    const base = await listen(app)
    const response = await fetch(`${base}/hijacked`, { method: 'POST' })
    await response.text()
    const current = app
    await waitFor(() => current.pgPool.stats().leased === 0)
    expect(await notes()).toEqual([]) // nothing committed
    expect(response.status).toBe(500) // before the fix: 200
  })

  test('a misspelled config.db key is refused on the first request (500, coded), nothing runs', async () => {
    app = Fastify()
    app.register(pgPoolCore, { connection: db.url, pool: { max: 1, applicationName: uniqueName(), lazy: true } })
    app.post('/typo', { config: { db: { transacton: true } as never } }, async (request) => {
      await request.db`insert into note values ('typo')`
      return { ok: true }
    })
    await app.ready()
    const response = await app.inject({ method: 'POST', url: '/typo' })
    expect(response.statusCode).toBe(500)
    expect(response.json().code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(response.json().message).toContain('did you mean transaction?')
    expect(await notes()).toEqual([])
    expect(app.pgPool.stats().leased).toBe(0)
  })
})

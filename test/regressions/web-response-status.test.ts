import { afterAll, afterEach, beforeAll, beforeEach, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Found by hostile probing, second round (failed before the fix): a route transaction whose handler returns a web
// `Response` (supported by Fastify 5: its status, headers and body become the reply's) with a
// status >= 400 COMMITS its work.
//
// Expected: packages/core/README.md l.26-27 "rolled back ... on any reply with status >= 400";
// docs/migrating-from-fastify-postgres.md l.236 "Any reply >= 400 rolls back, whether the handler
// threw or not".
//
// What happened before the fix: the core decides in onSend from reply.statusCode (request-lease.ts
// endMode), which is still 200 there: Fastify applies `payload.status` of a Response only in
// onSendEnd, after every onSend hook (fastify/lib/reply.js onSendEnd, "[object Response]"). The
// client gets 409 and the work is committed.

let db: TestDatabase
let current: TestApp
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (body text not null)`
})
beforeEach(async () => {
  await db.sql`truncate note`
  current = await coreApp(db.url, { max: 1, acquireTimeout: 1000 })
})
afterEach(() => current.app.close())
afterAll(() => db.drop())

const notes = async () => (await db.sql<{ body: string }[]>`select body from note`).map((r) => r.body)

test('return new Response(body, { status: 409 }) on a transaction route rolls back', async () => {
  const { app } = current
  app.post('/orders', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into note values ('half')`
    return new Response(JSON.stringify({ error: 'conflict' }), {
      status: 409,
      headers: { 'content-type': 'application/json' },
    })
  })
  const response = await app.inject({ method: 'POST', url: '/orders' })
  expect(response.statusCode).toBe(409)
  await waitFor(() => app.pgPool.stats().leased === 0)
  expect(await notes()).toEqual([]) // observed: ['half'] (committed)
})

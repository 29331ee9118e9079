// What the user does: a route transaction (`transaction: true`, and a `begin()` block) whose
// handler did its writes and then waits (an outside call) while its connection is lost: the
// server's idle_in_transaction_session_timeout ends the session, as PgBouncer's
// idle_transaction_timeout or a network cut would.
// What they should get: what the README and docs/replicas.md say of a connection lost
// mid-request: a 503 with Retry-After (FST_PG_POOL_CONNECTION_LOST); nothing was committed (the
// COMMIT was never sent), so a retry is safe.
// What they got: a 500 FST_PG_POOL_COMMIT_FAILED ("not committed (the connection was lost)")
// without Retry-After, which clients and load balancers do not retry.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor } from '../../../support/database.js'
import { connectionSeeingCloses } from '../close-watch-kit.js'

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await db.sql`truncate ledger`
})
afterAll(() => db.drop())

/** An app whose `lost()` resolves once the pool saw a connection close (its onclose runs after the pool's). */
async function appSeeingCloses(): Promise<{ app: FastifyInstance; lost: () => Promise<void> }> {
  const watched = connectionSeeingCloses(db.url)
  const instance = Fastify()
  await instance.register(pgPoolCore, {
    connection: watched.connection,
    pool: { max: 1 },
  })
  const lost = async () => {
    expect(await waitFor(() => watched.closes() > 0, 10_000)).toBe(true)
  }
  return { app: instance, lost }
}

test('a route transaction whose connection is lost before COMMIT: 503 with Retry-After, nothing committed', async () => {
  const t = await appSeeingCloses()
  app = t.app
  app.post('/write', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into ledger (note) values ('lost')`
    await request.db`set local idle_in_transaction_session_timeout = '100ms'`
    await t.lost()
    return { ok: true }
  })
  const res = await app.inject({ method: 'POST', url: '/write' })
  expect(res.statusCode, res.body).toBe(503)
  expect(res.json()).toMatchObject({ code: 'FST_PG_POOL_CONNECTION_LOST' })
  expect(res.headers['retry-after']).toBeDefined()
  expect(await db.sql`select note from ledger`).toEqual([])
})

test('a begin() block whose connection is lost before its COMMIT: a retryable 503, nothing committed', async () => {
  const t = await appSeeingCloses()
  app = t.app
  app.post('/block', async (request) => {
    await request.db.begin(async (tx) => {
      await tx`insert into ledger (note) values ('lost')`
      await tx`set local idle_in_transaction_session_timeout = '100ms'`
      await t.lost()
    })
    return { ok: true }
  })
  const res = await app.inject({ method: 'POST', url: '/block' })
  expect(res.statusCode, res.body).toBe(503)
  expect(res.json()).toMatchObject({ code: 'FST_PG_POOL_CONNECTION_LOST' })
  expect(res.headers['retry-after']).toBeDefined()
  expect(await db.sql`select note from ledger`).toEqual([])
})

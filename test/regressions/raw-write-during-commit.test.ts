import Fastify, { type FastifyInstance } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, beforeEach, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'

// Found by hostile probing, third round (failed before the fix).
// Expected (packages/core/README.md "Route transactions: COMMIT before the first byte", l.220-240):
// "A client never receives a 2xx status for work that is not committed"; "A write to reply.raw
// that does not go through onSend (... reply.raw written without hijacking) waits for the COMMIT
// in the same way ... if the COMMIT fails, the client gets the 500 instead and the handler's later
// writes are dropped".
//
// What happens instead: when the raw write comes while onSend's COMMIT is still running
// (reply.send(x) not awaited, then reply.raw written — the same shape as the double-send fix, with
// reply.raw as the second writer), the gate's commit callback sees lease.finished (true as soon as
// finish() was *called*) and returns the already-resolved `finished` promise instead of the COMMIT
// in flight: the raw 200 leaves at once, the COMMIT then fails (deferred trigger raises), nothing
// is committed, and the client has a 200.
//
// Root cause guess: packages/core/src/request-lease.ts, gateRaw's commit callback
// `return lease.finished ? finished : lease.finish(mode)` (and notCommitted() returns undefined for
// mode 'commit' whatever the COMMIT's outcome): it should wait for the finishing promise
// (lease.finish(mode) returns #finishing) and fail when that COMMIT failed.

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table slow (id int, fail boolean not null default false)`
  await db.sql.unsafe(`create function slow_commit() returns trigger language plpgsql as $$
    begin perform pg_sleep(0.5); if new.fail then raise exception 'deferred failure'; end if; return null; end $$`)
  await db.sql.unsafe(`create constraint trigger slow_c after insert on slow deferrable initially deferred
    for each row execute function slow_commit()`)
})
beforeEach(async () => {
  await db.sql`truncate slow`
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

test('reply.raw written while onSend waits for a COMMIT that fails: not a 200', async () => {
  const a = Fastify()
  app = a
  await a.register(pgPool, {
    connection: db.url,
    pool: { max: 2, pgbouncer: db.viaBouncer, applicationName: uniqueName(), acquireTimeout: 2000 },
  })
  a.post('/t', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into slow (id, fail) values (1, true)` // COMMIT will fail (deferred)
    reply.send({ ok: true }) // onSend starts the COMMIT
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.end('raw')
    return reply
  })
  const base = await listen(a)
  const response = await fetch(`${base}/t`, { method: 'POST' })
  const body = await response.text().catch((e) => `error ${e}`)
  await waitFor(() => a.pgPool.stats().leased === 0, 5000)
  expect(await db.sql`select id from slow`).toHaveLength(0) // nothing committed
  expect({ status: response.status, body }).not.toMatchObject({ status: 200 }) // before the fix: 200 'raw'
  expect(response.status).toBeGreaterThanOrEqual(500)
})

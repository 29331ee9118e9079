// DEFECT (probe-pgbouncer, medium). What the user does: runs several instances with
// @fastify-pg-pool/health behind PgBouncer in transaction mode (`pool.pgbouncer: true`), readiness
// as the Kubernetes readinessProbe; PgBouncer is at one of its own limits while every instance's
// pool serves. What they see: /health/ready answers 503 `fail` on every instance at once, which
// empties the Service (an outage) although each instance serves its requests:
// 1. max_client_conn reached (each instance's pool holds its connections; the ping's extra
//    connection is refused by PgBouncer with 08P01 "no more connections allowed
//    (max_client_conn)"): "database unreachable (FST_PG_POOL_CONNECT_FAILED)". Round ten fixed
//    exactly this for PostgreSQL's own refusal (53300: `warn`, "the pool's N connections serve",
//    test/regressions/health-connection-limit.test.ts); PgBouncer's refusal is not recognised
//    (health-report.ts:127-145 only knows 53300).
// 2. PgBouncer's server connections all busy (default_pool_size reached by long statements, the
//    app's own queue empty): the ping's connection waits in PgBouncer's queue and readiness fails
//    "database did not answer within 500 ms". The health README promises the ping runs "outside
//    the pool's wait queue, so it does not queue behind saturated traffic" and that saturation
//    fails readiness only when the pool's queue is full ("every pod saturated would empty the
//    Service"); behind PgBouncer it queues behind saturated traffic in PgBouncer's queue.
// What they should see: `warn` (200) in both cases while the pool holds open connections that
// serve, as for 53300: recognise PgBouncer's "no more connections allowed" refusal (08P01 with
// that message) like 53300, and behind PgBouncer ping on an idle pool connection (or report a
// ping stuck in PgBouncer's queue as saturation, `warn`), or document both.
// Failed on a718e61 (case 1): {"status":"fail","output":"database unreachable
// (FST_PG_POOL_CONNECT_FAILED)",...}: expected 503 to be 200.
// Moved with case 1 only (the ping's 08P01 read like 53300, packages/health ping-cache.ts and
// health-report.ts); case 2 (the ping waiting in PgBouncer's queue behind busy server connections)
// is left out of this file: not fixed in this round.
import pgPoolHealth from '@fastify-pg-pool/health'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'
import { type Bouncer, startBouncer } from './bouncer-kit.js'

let db: TestDatabase
const apps: TestApp[] = []
const bouncers: Bouncer[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  for (const { app } of apps) await app.close()
  for (const bouncer of bouncers) await bouncer.stop()
  await db?.drop()
})

async function healthApp(settings: Record<string, number>): Promise<TestApp & { bouncer: Bouncer }> {
  const bouncer = await startBouncer(db.directUrl, settings)
  bouncers.push(bouncer)
  const current = await coreApp(bouncer.via(db.directUrl), { max: 2, pgbouncer: true })
  apps.push(current)
  await current.app.register(pgPoolHealth, { cacheTime: 0, pingTimeout: 500 })
  current.app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
  await current.app.ready()
  return { ...current, bouncer }
}

describe('readiness behind PgBouncer at its own limits while the pool serves', () => {
  test('max_client_conn taken by the pool: readiness warns, not fails', async () => {
    const { app } = await healthApp({ default_pool_size: 4, max_client_conn: 2 })
    // Both client connections PgBouncer allows are the pool's (as with instances x max = max_client_conn).
    await Promise.all([app.inject('/q'), app.inject('/q')])
    expect(app.pgPool.stats().open).toBe(2)
    const ready = await app.inject('/health/ready')
    const served = await app.inject('/q')
    expect(served.statusCode, 'precondition: the pool serves').toBe(200)
    expect(ready.statusCode, ready.body).toBe(200)
  })
})

import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { collectGarbage, liveObjects, Timeout } from '../support/growth-kit.js'

// Found by hostile probing (round nine, growth): the LISTEN connection's end swept the ended
// client on a 100 ms timer for connectTimeout + 2 s even after a clean end, where no connection
// can be on its way. Both tests failed before the fix (live timers 8 -> 106 after 100 cycles; 10
// of 10 closed apps alive after a full GC); the sweep now runs only when the client was not
// connected (a reconnect or an opening may still complete).

let db: TestDatabase
const apps: FastifyInstance[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(() => db.drop())

describe('LISTEN connection', () => {
  // Before the fix: each time the last channel was unlistened (and on app.close()), Listener#endClient
  // starts #sweep (listener.ts): a 100 ms timer re-armed until connectTimeout + 2 s have passed,
  // whose closure holds the ended postgres.js client, and through its onnotice option the
  // instance's pools. Observed: 100 listen/unlisten cycles of one channel -> +100 live Timeout
  // objects (100 sweeps, each waking every 100 ms: 1000 wake-ups a second) and about 42 kB of
  // heap kept per cycle, for 7 s with the default connectTimeout (32 s with connectTimeout
  // 30000). A route that listens for the life of a request (server-sent events) makes the
  // number grow with the request rate.
  test('listening and unlistening a channel 100 times leaves no timers behind', async () => {
    const { app } = await coreApp(db.directUrl, { max: 1, pgbouncer: false })
    apps.push(app)
    const before = liveObjects(Timeout)
    for (let i = 0; i < 100; i++) {
      const listening = await app.db.listen('growth_cycles', () => {})
      await listening.unlisten()
    }
    const after = liveObjects(Timeout)
    expect(app.pgPool.listener()).toMatchObject({ listeners: 0, channels: 0 })
    expect(after - before, `live Timeout objects ${before} -> ${after}`).toBeLessThan(10)
  })

  // Before the fix: the same sweep kept every closed app that ever listened reachable (pools, leases,
  // routes, logger) for connectTimeout + 2 s after app.close(). Observed: 10 apps created,
  // listened on, closed -> 10 still alive after a full GC (0 or 1 without the listen: see
  // test/core/long-run-growth.test.ts; the 1 is postgres.js's origin cache of a call site's first query).
  test('an app closed after it listened can be garbage-collected at once', async () => {
    const refs: WeakRef<FastifyInstance>[] = []
    for (let i = 0; i < 10; i++) {
      const { app } = await coreApp(db.directUrl, { max: 1, pgbouncer: false })
      await app.inject('/')
      const listening = await app.db.listen('growth_apps', () => {})
      await listening.unlisten()
      await app.close()
      refs.push(new WeakRef(app))
    }
    await collectGarbage()
    const alive = refs.filter((ref) => ref.deref() !== undefined).length
    expect(alive, `${alive} of 10 closed apps still alive`).toBeLessThanOrEqual(1)
  })
})

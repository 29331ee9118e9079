// Held attacks (second round against e93bc6d/3837354, pool.ts #afterCancel / #awaitingCancel): a
// connection back from an aborted request whose cancel request is still on its way (held by a
// proxy, as a slow server would) while:
// - the next request waits for it, the cancel ending within connectTimeout: served after the
//   cancel ended, not cancelled, and the connection is idle again (stats) afterwards;
// - app.close() runs: the close neither waits for the cancel nor leaves the connection behind
//   (its backend is gone at once), and the pool counts it closed.
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../../support/database.js'
import { listen } from '../../support/http.js'
import { leaveAwaitingCancel } from './awaiting-cancel.js'
import { type SlowCancelProxy, startSlowCancelProxy } from './slow-cancel-proxy.js'

let db: TestDatabase
let proxy: SlowCancelProxy
let current: TestApp | undefined
let admin: postgres.Sql
beforeAll(async () => {
  db = await createTestDatabase()
  proxy = await startSlowCancelProxy(Number(new URL(db.directUrl).port), new URL(db.directUrl).hostname)
  admin = postgres(db.directUrl, { max: 1, onnotice: () => {} })
})
afterEach(async () => {
  proxy.onCancel = undefined
  proxy.cancelDelayMs = 0
  await current?.app.close()
  current = undefined
  await sleep(1_100)
})
afterAll(async () => {
  await admin.end({ timeout: 1 })
  await proxy.close()
  await db.drop()
})

async function app() {
  current = await coreApp(proxy.urlFor(db.directUrl), {
    max: 1,
    connectTimeout: 3_000,
    acquireTimeout: 10_000,
    pgbouncer: false,
  })
  const { app } = current
  app.get('/pid', async (request) => (await request.db`select pg_backend_pid() as pid`)[0])
  app.get('/abandoned', async (request) => {
    await request.db`select pg_sleep(5) as abandoned`
    return 'never read'
  })
  app.get('/victim', async (request) => (await request.db`select pg_sleep(1.2) as victim, 'ok' as status`)[0])
  const base = await listen(app)
  return { app, base, applicationName: current.applicationName }
}

test('the next request waits for the cancel request to end (within connectTimeout), then runs uncancelled', async () => {
  const { app: a, base, applicationName } = await app()
  expect(await leaveAwaitingCancel(a, base, db, applicationName, proxy, admin, 800)).toBe(true)
  const before = proxy.delivered
  const res = await fetch(`${base}/victim`)
  const body = await res.text()
  expect({ status: res.status, body, delivered: proxy.delivered - before }).toEqual({
    status: 200,
    body: '{"victim":"","status":"ok"}',
    delivered: 1,
  })
  expect(await waitFor(() => a.pgPool.stats().idle === 1, 2_000)).toBe(true)
  expect(a.pgPool.stats()).toMatchObject({ open: 1, idle: 1, leased: 0, waiting: 0 })
})

test('app.close() while a connection waits for its cancel request: prompt, and its backend is gone', async () => {
  const { app: a, base, applicationName } = await app()
  const closes: string[] = []
  a.pgPool.on('close', (reason: string) => void closes.push(reason))
  expect(await leaveAwaitingCancel(a, base, db, applicationName, proxy, admin, 2_500)).toBe(true)
  const delivered = proxy.delivered
  await a.close()
  // Closed before the server got the cancel request (held 2.5 s): the close did not wait for it.
  const waitedForCancel = proxy.delivered !== delivered
  current = undefined
  expect(await waitFor(async () => (await db.countConnections(applicationName)) === 0, 2_000)).toBe(true)
  expect({ waitedForCancel, closes }).toEqual({ waitedForCancel: false, closes: ['shutdown'] })
})

// What the user does: watches the pool with @fastify-pg-pool/metrics (pg_pool_connections by
// state, pg_pool_connections_opened_total - closed_total) and app.pgPool.stats(), while a
// connection is back from an aborted request and waits for its cancel request to end (pool.ts
// #afterCancel; a cancel request takes a round trip or more, a TLS handshake: held 1 s here).
// What they should get (packages/metrics/README.md: `pg_pool_connections` "Server connections by
// state: idle, leased, connecting", and "`opened - closed` equals the open connections";
// PoolStats: open = connections open or being opened): every open connection in one of the
// states: idle + leased + connecting = open = opened - closed.
// What they get: the connection is in #all (counted by `open`) but neither in #idle nor in
// #leased: the three states sum to 0 with one connection open, and the gauges show an empty pool
// while a request waits for the only connection (and `maxWaiting: 0`, documented as "no request
// waits behind another's connection", lets a request wait behind it: #queueCap counts it as room).
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../../metrics/exposition.js'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, sleep, type TestDatabase } from '../../support/database.js'
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

async function app(pool: Record<string, unknown> = {}) {
  current = await coreApp(proxy.urlFor(db.directUrl), {
    max: 1,
    connectTimeout: 3_000,
    acquireTimeout: 10_000,
    pgbouncer: false,
    ...pool,
  })
  const { app } = current
  await app.register(pgPoolMetrics)
  app.get('/pid', async (request) => (await request.db`select pg_backend_pid() as pid`)[0])
  app.get('/abandoned', async (request) => {
    await request.db`select pg_sleep(5) as abandoned`
    return 'never read'
  })
  app.get('/quick', async (request) => (await request.db`select 1 as ok`)[0])
  const base = await listen(app)
  return { app, base, applicationName: current.applicationName }
}

test('a connection waiting for its cancel request is counted in a state (stats and pg_pool_connections)', async () => {
  const { app: a, base, applicationName } = await app()
  expect(await leaveAwaitingCancel(a, base, db, applicationName, proxy, admin, 1_000)).toBe(true)
  const stats = a.pgPool.stats()
  const scrape = parseExposition((await a.inject('/metrics')).body)
  const byState = Object.fromEntries(
    scrape.find('pg_pool_connections', { pool: 'primary' }).map((s) => [s.labels.state, s.value]),
  )
  const opened = scrape.value('pg_pool_connections_opened_total', { pool: 'primary' })
  const closed = scrape.find('pg_pool_connections_closed_total', { pool: 'primary' }).reduce((n, s) => n + s.value, 0)
  expect({
    statsOpen: stats.open,
    statsInStates: stats.idle + stats.leased + stats.connecting,
    openedMinusClosed: opened - closed,
    gaugesInStates: (byState.idle ?? 0) + (byState.leased ?? 0) + (byState.connecting ?? 0),
  }).toEqual({ statsOpen: 1, statsInStates: 1, openedMinusClosed: 1, gaugesInStates: 1 })
})

test('maxWaiting: 0 ("no request waits behind another\'s connection"): a request is not queued behind a connection waiting for its cancel', async () => {
  const { app: a, base, applicationName } = await app({ maxWaiting: 0 })
  expect(await leaveAwaitingCancel(a, base, db, applicationName, proxy, admin, 1_500)).toBe(true)
  const started = Date.now()
  const res = await fetch(`${base}/quick`)
  const waitedMs = Date.now() - started
  const body = await res.text()
  // Refused at once (QUEUE_FULL), as with the connection leased; it waited for the cancel instead.
  expect({ status: res.status, queued: waitedMs >= 500 }, body).toEqual({ status: 503, queued: false })
})

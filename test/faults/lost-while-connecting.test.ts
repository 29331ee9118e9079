import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { failOnProcessErrors, fastTimeouts } from './process-errors.js'

let db: TestDatabase
let proxy: TcpProxy
let current: TestApp | undefined
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  proxy = await startTcpProxy(Number(new URL(db.url).port))
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await proxy.close()
  await db.drop()
})

// postgres.js fetches array types on each new connection from a promise nobody handles
// (porsager/postgres#1192, #1205, #1223): a connection lost at that moment ended the process
// with an unhandled rejection. Here the proxy resets every connection at exactly that point.
test('a connection lost while it loads array types fails the request, never the process', async () => {
  current = await coreApp(proxy.urlFor(db.url), { max: 2, lazy: true, ...fastTimeouts })
  const { app } = current
  app.get('/tags', async (request) => (await request.db`select ${request.db.array(['a', 'b'])}::text[] as tags`)[0])
  let resets = 0
  proxy.onClientData = (chunk) => {
    if (chunk.includes('pg_catalog.pg_type')) {
      resets++
      proxy.setMode('reset')
    }
  }
  const failed = await app.inject('/tags')
  expect(resets).toBeGreaterThan(0)
  expect(failed.statusCode).toBe(503)
  expect(failed.json()).toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED' })
  // Give a discarded promise time to surface as an unhandled rejection.
  await new Promise((resolve) => setTimeout(resolve, 300))

  proxy.onClientData = undefined
  proxy.setMode('pass')
  expect(await waitFor(async () => (await app.inject('/tags')).statusCode === 200, 3_000)).toBe(true)
  // Array parameters and array results still work on connections opened afterwards.
  expect((await app.inject('/tags')).json()).toEqual({ tags: ['a', 'b'] })
  // The response does not wait for its lease to come back (onSend returns it without awaiting
  // outside a transaction): once in CI it was still leased when the response arrived.
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 1_000)).toBe(true)
  expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
})

// postgres.js's connect_timeout stops once the server said ReadyForQuery; the pool's first
// query on a new connection had no deadline: a server frozen at that moment kept the
// connection "connecting" forever, and with max 1 the pool never served again.
test('a server that freezes right after the handshake: the opening connection is given up', async () => {
  current = await coreApp(proxy.urlFor(db.url), { max: 1, lazy: true, ...fastTimeouts })
  const { app } = current
  app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
  proxy.onClientData = (chunk) => {
    if (chunk.includes('pg_backend_pid')) proxy.setMode('blackhole')
  }
  const frozen = await app.inject('/one')
  expect(frozen.statusCode).toBe(503)
  expect(proxy.mode).toBe('blackhole')
  proxy.onClientData = undefined
  proxy.setMode('pass')
  // Within connectTimeout the stuck attempt is cut and a new one serves.
  const started = Date.now()
  expect(await waitFor(async () => (await app.inject('/one')).statusCode === 200, 3_000)).toBe(true)
  console.log(`[fault:frozen-handshake] served again ${Date.now() - started} ms after the proxy passed`)
  expect(await waitFor(() => app.pgPool.stats().idle === 1)).toBe(true)
  expect(app.pgPool.stats()).toMatchObject({ connecting: 0, open: 1, leased: 0 })
})

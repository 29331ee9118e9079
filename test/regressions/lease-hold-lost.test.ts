import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'

// Found by a seeded chaos storm (round ten of hostile probing), reduced: `app.db.lease()` whose
// connection was lost as its first statement went out (a terminated backend, a failover) rejected
// with FST_PG_POOL_CONNECTION_LOST, and nothing ended the lease: the pool counted the dead
// connection as leased for good (with max 1, every later request failed with ACQUIRE_TIMEOUT until
// app.close()). Failed before the fix; the lease is now ended when lease() rejects.

let db: TestDatabase
let proxy: TcpProxy
let current: TestApp | undefined
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  proxy = await startTcpProxy(Number(new URL(db.url).port))
})
afterEach(async () => {
  proxy.onClientData = undefined
  proxy.setMode('pass')
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await proxy.close()
  await db.drop()
})

test('app.db.lease() that fails with a lost connection leaves nothing leased', async () => {
  current = await coreApp(proxy.urlFor(db.url), { max: 1, acquireTimeout: 1_000, closeTimeout: 300 })
  const { app } = current
  app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
  expect((await app.inject('/one')).statusCode).toBe(200)
  // The connection is cut the moment lease()'s statement goes out.
  let cuts = 0
  proxy.onClientData = (chunk) => {
    if (cuts === 0 && chunk.includes('SELECT 1')) {
      cuts++
      proxy.cutAll()
    }
  }
  const failed = await app.db.lease().then(
    async (lease) => {
      await lease.release()
      return 'leased'
    },
    (error: { code?: string }) => error.code,
  )
  proxy.onClientData = undefined
  expect({ cuts, failed }).toEqual({ cuts: 1, failed: 'FST_PG_POOL_CONNECTION_LOST' })
  const back = await waitFor(() => app.pgPool.stats().leased === 0, 2_000)
  const next = await app.inject('/one')
  expect({ back, leased: app.pgPool.stats().leased, next: next.statusCode }).toEqual({
    back: true,
    leased: 0,
    next: 200,
  })
})

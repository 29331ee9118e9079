import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Found by a seeded chaos storm (round ten of hostile probing), reduced: a request moved to another
// connection by a failed session reset was counted as two acquires (pg_pool_acquires_total,
// pg_pool_acquire_seconds) for one lease: acquires and releases no longer paired up. Failed
// before the fix.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

test('a request moved to another connection by a failed reset counts one acquire, not two', async () => {
  current = await coreApp(db.url, { max: 1 })
  const { app } = current
  await app.register(pgPoolMetrics)
  const events = { acquire: 0, release: 0, resetError: 0 }
  app.pgPool.on('acquire', () => void events.acquire++)
  app.pgPool.on('release', () => void events.release++)
  app.pgPool.on('resetError', () => void events.resetError++)
  app.get('/prepare', async (request) => {
    await request.db.unsafe('prepare mine as select 1')
    return { ok: true }
  })
  app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
  expect((await app.inject('/prepare')).statusCode).toBe(200)
  expect((await app.inject('/next')).json()).toEqual({ one: 1 })
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  const m = parseExposition((await app.inject('/metrics')).body)
  expect({
    ok: m.value('pg_pool_acquires_total', { result: 'ok' }),
    acquireObservations: m.value('pg_pool_acquire_seconds_count'),
    leases: m.find('pg_pool_lease_seconds_count').reduce((sum, s) => sum + s.value, 0),
    events,
  }).toEqual({ ok: 2, acquireObservations: 2, leases: 2, events: { acquire: 2, release: 2, resetError: 1 } })
})

// Held attacks from hostile probing (round 8, observability): after backends are terminated (idle and mid-query), connections
// retired by idleTimeout and a reconnect, do opened - closed, the gauges and the server agree?
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'
import { parseExposition } from './exposition.js'

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

describe('connection churn', () => {
  test('terminated idle and busy backends, idle retirement: opened - closed = open = server backends', async (ctx) => {
    if (db.viaBouncer) ctx.skip()
    const t = await coreApp(db.url, { max: 3, acquireTimeout: 5_000, idleTimeout: 1_500 })
    app = t.app
    await t.app.register(pgPoolMetrics)
    t.app.get('/q', async (request) => (await request.db`select pg_sleep(0.05), 1 as one`)[0])
    t.app.get('/long', async (request) => (await request.db`select pg_sleep(3)`)[0])
    const base = await listen(t.app)
    const scrape = async () => parseExposition((await t.app.pgPoolMetrics.scrape()).body)
    const balance = async () => {
      const m = await scrape()
      const closed = m.find('pg_pool_connections_closed_total').reduce((s, x) => s + x.value, 0)
      const opened = m.value('pg_pool_connections_opened_total')
      const gauges =
        m.value('pg_pool_connections', { state: 'idle' }) +
        m.value('pg_pool_connections', { state: 'leased' }) +
        m.value('pg_pool_connections', { state: 'connecting' })
      return { net: opened - closed, gauges, server: await db.countConnections(t.applicationName), m }
    }
    const settled = async (what: string) => {
      expect(
        await waitFor(async () => {
          const b = await balance()
          return b.net === b.gauges && b.gauges === b.server
        }, 5_000),
        `${what}: ${JSON.stringify(await balance().then(({ m: _, ...rest }) => rest))}`,
      ).toBe(true)
    }

    await Promise.all([fetch(`${base}/q`), fetch(`${base}/q`), fetch(`${base}/q`)])
    await settled('warm')
    // Idle backends terminated by the server.
    await db.terminate(t.applicationName)
    await sleep(300)
    await settled('idle terminated')
    expect((await fetch(`${base}/q`)).status).toBe(200)
    await settled('after reconnect')
    // A backend terminated mid-query.
    const long = fetch(`${base}/long`).then((r) => r.status)
    await waitUntil(async () => (await db.running(t.applicationName, '%pg_sleep(3)%')) === 1, 'long runs', 5_000)
    await db.terminate(t.applicationName)
    expect(await long).toBe(503)
    await settled('busy terminated')
    // Retired by idleTimeout.
    await Promise.all([fetch(`${base}/q`), fetch(`${base}/q`)])
    await sleep(2_500)
    await settled('after idleTimeout')
    const { m } = await balance()
    expect(m.value('pg_pool_connections_closed_total', { reason: 'error' })).toBeGreaterThanOrEqual(4)
    expect(m.value('pg_pool_connections_closed_total', { reason: 'idle' })).toBeGreaterThanOrEqual(1)
    expect(m.samples.filter((s) => s.value < 0)).toEqual([])
  })
})

import pgPoolHealth, { type HealthResponse } from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { expectHealthJson } from '../health/support.js'
import { parseExposition } from '../metrics/exposition.js'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'

// The listener in health (postgres:listener) and metrics (listeners, notifications, reconnections),
// through the view's listener() counts.

let db: TestDatabase
let proxy: TcpProxy
failOnProcessErrors()

beforeAll(async () => {
  db = await createTestDatabase()
  const target = new URL(db.directUrl)
  proxy = await startTcpProxy(Number(target.port), target.hostname)
})
afterAll(async () => {
  await proxy.close()
  await db.drop()
})

describe('the listener in health and metrics', () => {
  test('connected: pass and counted; its connection held down: warn (200), then back and counted', async () => {
    // Through a proxy that can hold a new connection back; the ping result is kept for a minute.
    const { app, applicationName } = await coreApp(proxy.urlFor(db.directUrl), {
      pgbouncer: false,
      connectTimeout: 1_000,
    })
    try {
      await app.register(pgPoolHealth, { cacheTime: 60_000 })
      await app.register(pgPoolMetrics)
      const ready = async () => {
        const res = await app.inject('/health/ready')
        return { status: res.statusCode, body: expectHealthJson(JSON.parse(res.body)) as HealthResponse }
      }
      const scrape = async () => parseExposition((await app.inject('/metrics')).body)
      const pool = { pool: 'primary' }

      const idle = await ready()
      expect(idle.body.status).toBe('pass')
      expect(idle.body.checks?.['postgres:listener']).toBeUndefined()
      expect((await scrape()).value('pg_pool_listeners', pool)).toBe(0)

      const received: string[] = []
      await app.db.listen('a', (n) => void received.push(n.payload))
      await app.db.listen('a', () => {})
      await app.db.listen('b', () => {})
      for (const payload of ['1', '2']) await db.sql`select pg_notify('a', ${payload})`
      await waitUntil(() => received.length === 2, 'two notifications')

      const up = await ready()
      expect(up.body.status).toBe('pass')
      expect(up.body.checks?.['postgres:listener']).toEqual([
        expect.objectContaining({
          componentId: 'primary',
          status: 'pass',
          observedValue: 3,
          observedUnit: 'listeners',
          connected: true,
          channels: 2,
          reconnections: 0,
        }),
      ])
      let m = await scrape()
      expect(m.value('pg_pool_listeners', pool)).toBe(3)
      expect(m.value('pg_pool_listener_connected', pool)).toBe(1)
      expect(m.value('pg_pool_notifications_total', pool)).toBe(2)
      expect(m.value('pg_pool_listener_reconnections_total', pool)).toBe(0)

      // The listener's backend dies and every new connection is held back by the proxy.
      proxy.connectDelay = () => 60_000
      expect(await db.terminate(`${applicationName}/listen`)).toBe(1)
      await waitUntil(() => !app.pgPool.listener().connected, 'the listener down')
      const down = await ready()
      expect(down.status).toBe(200)
      expect(down.body.status).toBe('warn')
      expect(down.body.output).toBe('LISTEN connection down: reconnecting (2 channels)')
      expect(down.body.checks?.['postgres:listener']?.[0]).toMatchObject({ status: 'warn', connected: false })
      expect(down.body.checks?.['postgres:responseTime']?.[0]?.status).toBe('pass')
      expect((await scrape()).value('pg_pool_listener_connected', pool)).toBe(0)

      proxy.connectDelay = undefined
      await waitUntil(() => app.pgPool.listener().connected, 'the listener back', 15_000)
      await db.sql`select pg_notify('a', '3')`
      await waitUntil(() => received.length === 3, 'a notification after the reconnection')
      expect((await ready()).body.status).toBe('pass')
      m = await scrape()
      expect(m.value('pg_pool_listener_connected', pool)).toBe(1)
      expect(m.value('pg_pool_listener_reconnections_total', pool)).toBe(1)
      expect(m.value('pg_pool_notifications_total', pool)).toBe(3)
    } finally {
      proxy.connectDelay = undefined
      await app.close()
    }
  })
})

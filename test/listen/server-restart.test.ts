import pgPoolHealth from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import postgres from 'postgres'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { expectHealthJson } from '../health/support.js'
import { parseExposition } from '../metrics/exposition.js'
import { coreApp, type TestApp } from '../support/app.js'
import { waitUntil } from '../support/database.js'
import { type EmbeddedServer, startEmbeddedServer } from '../support/embedded-server.js'

// A private server: stopping the run's shared one would break every other file.
let server: EmbeddedServer
let current: TestApp | undefined
failOnProcessErrors()
beforeAll(async () => {
  server = await startEmbeddedServer()
}, 120_000)
afterAll(async () => {
  await current?.app.close()
  await server?.destroy()
})

async function notify(channel: string, payload: string): Promise<void> {
  const sql = postgres(server.url, { max: 1, onnotice: () => {}, connect_timeout: 2 })
  try {
    await sql`select pg_notify(${channel}, ${payload})`
  } finally {
    await sql.end({ timeout: 1 })
  }
}

test('a server restart: the listener is reported down, then listens again and notifications flow', async () => {
  current = await coreApp(server.url, { pgbouncer: false, connectTimeout: 1_000, max: 2 })
  const { app, applicationName } = current
  await app.register(pgPoolHealth, { cacheTime: 0, pingTimeout: 500 })
  await app.register(pgPoolMetrics)
  const received: string[] = []
  await app.db.listen('restart', (n) => void received.push(n.payload))
  await notify('restart', 'before')
  await waitUntil(() => received.length === 1, 'the first notification')

  await server.stop()
  await waitUntil(() => !app.pgPool.listener().connected, 'the listener down')
  const down = await app.inject('/health/ready')
  expect(down.statusCode).toBe(503)
  const downBody = expectHealthJson(JSON.parse(down.body))
  expect(downBody.checks?.['postgres:listener']?.[0]).toMatchObject({ status: 'warn', connected: false })
  expect(parseExposition((await app.inject('/metrics')).body).value('pg_pool_listener_connected')).toBe(0)

  await server.start()
  // Reconnect attempts back off to at most 2 s; the slack covers a busy machine.
  await waitUntil(() => app.pgPool.listener().connected, 'the listener back', 20_000)
  await notify('restart', 'after')
  await waitUntil(() => received.length === 2, 'a notification after the restart')
  expect(received).toEqual(['before', 'after'])
  expect(app.pgPool.listener()).toMatchObject({ listeners: 1, channels: 1, connected: true, reconnections: 1 })

  const admin = postgres(server.url, { max: 1, onnotice: () => {} })
  try {
    const [row] = await admin<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity where application_name = ${`${applicationName}/listen`}`
    expect(row?.n).toBe(1)
  } finally {
    await admin.end({ timeout: 1 })
  }
  const m = parseExposition((await app.inject('/metrics')).body)
  expect(m.value('pg_pool_listener_reconnections_total', { pool: 'primary' })).toBe(1)
  expect(m.value('pg_pool_notifications_total', { pool: 'primary' })).toBe(2)
  const up = await app.inject('/health/ready')
  expect(expectHealthJson(JSON.parse(up.body)).checks?.['postgres:listener']?.[0]).toMatchObject({
    status: 'pass',
    reconnections: 1,
  })

  await app.close()
  current = undefined
  await waitUntil(async () => {
    const sql = postgres(server.url, { max: 1, onnotice: () => {} })
    try {
      const [row] = await sql<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity where application_name = ${`${applicationName}/listen`}`
      return row?.n === 0
    } finally {
      await sql.end({ timeout: 1 })
    }
  }, 'no LISTEN connection after app.close()')
}, 60_000)

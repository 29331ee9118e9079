// Round fourteen (observability probe), held: the metrics read after app.close() (a scrape
// through app.pgPoolMetrics.scrape(), as an app serving them elsewhere would) with connections
// leased, a waiter queued and a route transaction open when close began: every gauge back to 0 (read when the last pool ended: the plugin then takes its metrics out),
// every connection opened counted closed, histogram counts equal to their +Inf bucket and to
// the events, no host, user, password or SQL in any label.
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../../../metrics/exposition.js'
import { coreApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe('create table gate (id int)')
})
afterAll(() => db.drop())

test('after close: gauges 0, opened = closed, histograms consistent, no secret in a label', async () => {
  const { app } = await coreApp(db.url, { max: 2, closeTimeout: 500 })
  // Read once every pool has ended, before the plugin takes its metrics out of the registry.
  let final: Promise<string> | undefined
  app.pgPools.onClosed(() => {
    final = app.pgPoolMetrics.scrape().then((scrape) => scrape.body)
  })
  await app.register(pgPoolMetrics)
  app.get('/sleep', async (request) => {
    await request.db`select pg_sleep(30), ${'secret-param-123'}::text`
    return {}
  })
  app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into gate values (1)`
    await request.db`select pg_sleep(30)`
    return {}
  })
  app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
  for (let i = 0; i < 5; i++) expect((await app.inject('/one')).statusCode).toBe(200)
  const running = [app.inject('/sleep'), app.inject({ method: 'POST', url: '/tx' })]
  await waitUntil(() => app.pgPool.stats().leased === 2, 'both connections leased')
  const waiting = app.inject('/one')
  await waitUntil(() => app.pgPool.stats().waiting === 1, 'a waiter')
  await app.close()
  const statuses = (await Promise.all([...running, waiting])).map((r) => r.statusCode)
  expect(statuses.every((s) => s === 503)).toBe(true)

  expect(final).toBeDefined()
  const body = await (final as Promise<string>)
  const m = parseExposition(body)
  const gauge = (name: string, labels: Record<string, string> = {}) => m.value(name, { pool: 'primary', ...labels })
  expect({
    idle: gauge('pg_pool_connections', { state: 'idle' }),
    leased: gauge('pg_pool_connections', { state: 'leased' }),
    connecting: gauge('pg_pool_connections', { state: 'connecting' }),
    waiters: gauge('pg_pool_waiters'),
    oldest: gauge('pg_pool_oldest_wait_seconds'),
  }).toEqual({ idle: 0, leased: 0, connecting: 0, waiters: 0, oldest: 0 })
  const closed = m.find('pg_pool_connections_closed_total').reduce((sum, s) => sum + s.value, 0)
  expect(closed).toBe(m.value('pg_pool_connections_opened_total'))
  // One transaction, rolled back by the close.
  expect(m.value('pg_pool_transactions_total', { outcome: 'rollback' })).toBe(1)
  expect(m.value('pg_pool_transactions_total', { outcome: 'commit' })).toBe(0)
  // Acquires: 5 + 2 ok, the waiter refused (aborted or rejected), and the lease histogram agrees.
  const acquires = m.find('pg_pool_acquires_total')
  expect(m.value('pg_pool_acquires_total', { result: 'ok' })).toBe(7)
  expect(acquires.reduce((sum, s) => sum + s.value, 0)).toBe(8)
  for (const family of ['pg_pool_acquire_seconds', 'pg_pool_lease_seconds', 'pg_pool_http_request_duration_seconds']) {
    for (const count of m.find(`${family}_count`)) {
      const inf = m.find(`${family}_bucket`, { ...count.labels, le: '+Inf' })
      expect(
        inf.map((s) => s.value),
        family,
      ).toEqual([count.value])
    }
  }
  expect(m.find('pg_pool_lease_seconds_count').reduce((sum, s) => sum + s.value, 0)).toBe(7)
  const url = new URL(db.url)
  const labelText = m.samples.flatMap((s) => Object.values(s.labels)).join('\n')
  for (const secret of ['secret-param-123', 'pg_sleep', url.hostname, url.port, url.username]) {
    if (secret !== '') expect(labelText.includes(secret), secret).toBe(false)
  }
  if (db.password !== '') expect(body.includes(db.password)).toBe(false)
})

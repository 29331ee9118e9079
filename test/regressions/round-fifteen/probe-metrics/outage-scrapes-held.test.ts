// Round fifteen (metrics probe), held. What the user does: runs an app whose connection URL
// carries a password, scrapes /metrics (both formats) before, during and after a database
// outage (every connection cut, new ones reset) while requests keep coming.
// What they should get (and get): every scrape passes promtool (the Prometheus text; the
// OpenMetrics one ends in # EOF); no counter or histogram series
// ever goes down between scrapes (rate() stays right); the HTTP histogram holds exactly the
// responses the clients saw, by status class; no password, user or host in any label or HELP
// line; at rest after the outage the gauges are 0 and opened - closed = the server's backends.
import { spawnSync } from 'node:child_process'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../../../metrics/exposition.js'
import { coreApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName, urlAs, waitUntil } from '../../../support/database.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'

const password = 'Pw-"quoted"\\ secret#7'
const user = uniqueName('metrics_user').replace(/-/g, '_')

let db: TestDatabase
let proxy: TcpProxy
beforeAll(async () => {
  db = await createTestDatabase()
  await db.admin.unsafe(`create role ${user} login superuser password '${password.replace(/'/g, "''")}'`)
  proxy = await startTcpProxy(Number(new URL(db.directUrl).port || 5432))
})
afterAll(async () => {
  await proxy?.close()
  await db.drop([user])
})

const promtool = (text: string) => spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })

test('scrapes through an outage: promtool-clean, monotonic, truthful, nothing secret', async (ctx) => {
  if (db.viaBouncer) ctx.skip()
  const url = proxy.urlFor(urlAs(db.directUrl, user, password))
  const { app, applicationName } = await coreApp(url, { max: 3, acquireTimeout: 400, connectTimeout: 300 })
  await app.register(pgPoolMetrics)
  app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
  const seen = { '2xx': 0, '5xx': 0 }
  const hit = async (n: number) => {
    const answers = await Promise.all(Array.from({ length: n }, () => app.inject('/q')))
    for (const a of answers) {
      expect([200, 503, 500]).toContain(a.statusCode)
      seen[a.statusCode === 200 ? '2xx' : '5xx']++
    }
  }
  let previous = new Map<string, number>()
  const scrape = async () => {
    const body = (await app.inject('/metrics')).body
    const open = await app.inject({
      url: '/metrics',
      headers: { accept: 'application/openmetrics-text; version=1.0.0' },
    })
    // promtool parses the Prometheus text only (OpenMetrics' counter families lack `_total`).
    const check = promtool(body)
    expect(`${check.stdout}${check.stderr}`).toBe('')
    expect(open.body.endsWith('# EOF\n')).toBe(true)
    for (const text of [body, open.body]) {
      // Names, labels and HELP lines, not the values (a duration's digits may hold the port's).
      const named = text
        .split('\n')
        .map((line) => (line.startsWith('#') ? line : line.slice(0, line.lastIndexOf(' ') + 1)))
        .join('\n')
      for (const secret of [password, 'quoted', user, '127.0.0.1', `:${proxy.port}`, `"${proxy.port}"`]) {
        expect(named.includes(secret), secret).toBe(false)
      }
    }
    const m = parseExposition(body)
    const current = new Map<string, number>()
    for (const s of m.samples) {
      const family = s.name.replace(/_(bucket|count|sum)$/, '')
      const type = m.types.get(family) ?? m.types.get(s.name)
      if (type !== 'counter' && type !== 'histogram') continue
      const key = `${s.name}${JSON.stringify(s.labels)}`
      current.set(key, s.value)
      const before = previous.get(key)
      if (before !== undefined) expect(s.value, key).toBeGreaterThanOrEqual(before)
    }
    previous = current
    return m
  }

  await hit(6)
  await scrape()
  // The outage: open connections cut, new ones reset at once.
  proxy.setMode('reset')
  proxy.cutAll()
  for (let round = 0; round < 4; round++) {
    await hit(4)
    await scrape()
  }
  proxy.setMode('pass')
  await waitUntil(async () => (await app.inject('/q')).statusCode === 200, 'the database back', 10_000)
  seen['2xx']++
  await hit(6)
  await waitUntil(() => app.pgPool.stats().leased === 0 && app.pgPool.stats().connecting === 0, 'the pool at rest')
  const m = await scrape()

  expect(seen['5xx']).toBeGreaterThan(0)
  const http = (statusClass: string) =>
    m.find('pg_pool_http_request_duration_seconds_count', { route: '/q', status_class: statusClass })[0]?.value ?? 0
  // waitUntil's failed tries were answered too: every answer is in the histogram, none twice.
  expect(http('2xx') + http('5xx')).toBeGreaterThanOrEqual(seen['2xx'] + seen['5xx'])
  expect(http('2xx')).toBe(seen['2xx'])
  const gauge = (state: string) => m.value('pg_pool_connections', { pool: 'primary', state })
  expect({ leased: gauge('leased'), connecting: gauge('connecting'), waiters: m.value('pg_pool_waiters') }).toEqual({
    leased: 0,
    connecting: 0,
    waiters: 0,
  })
  const closed = m.find('pg_pool_connections_closed_total').reduce((sum, s) => sum + s.value, 0)
  const net = m.value('pg_pool_connections_opened_total') - closed
  expect(net).toBe(gauge('idle'))
  expect(await db.countConnections(applicationName)).toBe(net)
  expect(m.value('pg_pool_connection_errors_total')).toBeGreaterThan(0)
  await app.close()
})

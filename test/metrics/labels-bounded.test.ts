// From hostile probing (held): packages/metrics/README.md: "`route` is the route template, `unmatched`
// for every URL no route matched, `other` past `maxRoutes`", "`method` outside the common seven
// is `other`", "No label ever holds a URL", "The output passes `promtool check metrics`".
// Attacked with route templates holding a quote, a backslash, non-ASCII, a regexp and a
// wildcard, a custom HTTP method (PROPFIND), 50 random long 404 URLs x 7 methods, maxRoutes 5,
// and a user Summary whose label value holds a quote, a backslash and a newline in the same
// registry: the series stay bounded and promtool accepts the Prometheus text.
import { spawnSync } from 'node:child_process'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { Registry, Summary } from 'prom-client'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { listen } from '../support/http.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

const check = (text: string) => spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })

test('weird routes, many URLs, custom methods: bounded labels, promtool-clean', async () => {
  const registry = new Registry()
  new Summary({ name: 'user_latency', help: 'x', registers: [registry], labelNames: ['a'] }).observe({ a: 'q"\\\n' }, 1)
  const { app } = await coreApp(db.url, { max: 2 })
  app.addHttpMethod('PROPFIND')
  await app.register(pgPoolMetrics, { registry, maxRoutes: 5 })
  const weird = ['/a"b', '/back\\slash', '/ü/ñ', '/x/:id(^\\d+)', '/y/*', '/multi/:a-:b', '/z']
  for (const r of weird)
    app.route({
      method: ['GET', 'POST', 'PATCH', 'PROPFIND'] as never,
      url: r,
      handler: async (req) => (await req.db`select 1 as x`)[0],
    })
  const base = await listen(app)
  const urls = [
    '/a%22b',
    '/back%5Cslash',
    '/%C3%BC/%C3%B1',
    '/x/12',
    '/y/anything/here',
    '/multi/1-2',
    '/z',
    ...Array.from({ length: 50 }, (_, i) => `/rand/${i}/${'x'.repeat(i * 40)}`),
  ]
  for (const u of urls)
    for (const method of ['GET', 'POST', 'PATCH', 'SEARCH', 'PROPFIND', 'MKCOL', 'DELETE'])
      await fetch(base + u, { method }).catch(() => {})
  const prom = await (await fetch(`${base}/metrics`)).text()
  const om = await (
    await fetch(`${base}/metrics`, { headers: { accept: 'application/openmetrics-text; version=1.0.0' } })
  ).text()
  const r1 = check(prom)
  expect(`${r1.stdout}${r1.stderr}`).toBe('')
  expect(r1.status).toBe(0)
  // OpenMetrics: ends in # EOF, counters as <family>_total under a family TYPE line.
  expect(om.endsWith('# EOF\n')).toBe(true)
  expect(om).toContain('# TYPE pg_pool_acquires counter')
  const m = parseExposition(prom)
  const http = m.find('pg_pool_http_request_duration_seconds_count')
  const routes = new Set(http.map((s) => s.labels.route))
  const leaseRoutes = new Set(m.find('pg_pool_lease_seconds_count').map((s) => s.labels.route))
  // maxRoutes 5: five templates, then "other"; every unknown URL is "unmatched".
  expect([...routes].filter((r) => r !== 'other' && r !== 'unmatched')).toHaveLength(5)
  expect(routes.has('other')).toBe(true)
  expect(routes.has('unmatched')).toBe(true)
  expect(leaseRoutes.size).toBeLessThanOrEqual(6)
  for (const s of http) {
    expect(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'other']).toContain(s.labels.method)
    expect(['1xx', '2xx', '3xx', '4xx', '5xx', 'aborted']).toContain(s.labels.status_class)
  }
  // No raw URL (the 50 random, long paths) in any label.
  expect(prom).not.toContain('/rand/')
  expect(om).not.toContain('/rand/')
  await app.close()
})

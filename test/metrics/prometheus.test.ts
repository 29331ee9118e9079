import { readFileSync } from 'node:fs'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { buildApp } from '../../examples/observability/src/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'
import { type Prometheus, type PromSeries, startPrometheus } from '../support/prometheus.js'
import { prometheusTool } from '../support/tools.js'

const prometheusBin = prometheusTool('prometheus', 'real Prometheus test')
const examples = new URL('../../examples/observability/', import.meta.url)

let db: TestDatabase
let app: FastifyInstance
let prometheus: Prometheus | undefined
let url = ''
const accepts: string[] = []

const query = (promql: string): Promise<PromSeries[]> => (prometheus as Prometheus).query(promql)

async function eventually<T>(read: () => Promise<T>, ok: (value: T) => boolean, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs
  let last: T | undefined
  while (Date.now() < deadline) {
    last = await read().catch(() => undefined)
    if (last !== undefined && ok(last)) return last
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`)
}

beforeAll(async () => {
  if (prometheusBin === undefined) return
  db = await createTestDatabase()
  app = await buildApp({ connection: db.url, logger: false, pool: { max: 2, acquireTimeout: 10_000 } })
  app.addHook('onRequest', async (request) => {
    if (request.url === '/metrics') accepts.push(request.headers.accept ?? '')
  })
  url = await listen(app)
  prometheus = await startPrometheus(
    prometheusBin,
    new URL(url).host,
    new URL('prometheus-rules.yml', examples).pathname,
    'example',
  )
  // Prometheus hands new targets to the scrapers about 5 s after start.
  await eventually(
    async () => (await query('up')).map((s) => s.value[1]),
    (up) => up[0] === '1',
    'the first scrape',
    15_000,
  )
})

afterAll(async () => {
  await prometheus?.stop()
  await app?.close()
  await db?.drop()
})

// Skipped only without prometheus outside CI (see test/support/tools.ts).
describe.skipIf(prometheusBin === undefined)('a real Prometheus scraping the example app', () => {
  test('PromQL returns the waiting gauge and the acquire histogram', async () => {
    // Two connections held 2.5 s, three requests queued behind them.
    const held = Array.from({ length: 5 }, () => startRequest(`${url}/slow?ms=2500`))
    const waiting = await eventually(
      () => query('pg_pool_waiters'),
      (result) => result[0]?.value[1] === '3',
      'pg_pool_waiters = 3 in Prometheus',
    )
    expect(waiting).toHaveLength(1)
    expect(waiting[0]?.metric).toMatchObject({ __name__: 'pg_pool_waiters', job: 'example', pool: 'primary' })

    const leased = await query('pg_pool_connections{state="leased"}')
    expect(leased[0]?.value[1]).toBe('2')

    const buckets = await query('pg_pool_acquire_seconds_bucket')
    expect(buckets.map((s) => s.metric.le)).toEqual(expect.arrayContaining(['0.001', '0.01', '0.1', '1', '10', '+Inf']))
    expect(buckets).toHaveLength(14)
    const count = await eventually(
      () => query('pg_pool_acquire_seconds_count'),
      (result) => Number(result[0]?.value[1]) >= 2,
      'acquires in the histogram',
    )
    expect(count).toHaveLength(1)

    expect((await Promise.all(held.map((r) => r.done))).every((status) => status === 200)).toBe(true)
    // Prometheus asked for OpenMetrics, and the target is healthy: it parsed what it got.
    expect(accepts.some((accept) => accept.includes('application/openmetrics-text'))).toBe(true)
    const targets = (await (await fetch(`${(prometheus as Prometheus).api}/api/v1/targets`)).json()) as {
      data: { activeTargets: { health: string; lastError: string }[] }
    }
    expect(targets.data.activeTargets).toEqual([expect.objectContaining({ health: 'up', lastError: '' })])
  })

  test('the alert rules load and every dashboard query runs and returns series', async () => {
    const rules = (await (await fetch(`${(prometheus as Prometheus).api}/api/v1/rules`)).json()) as {
      data: { groups: { name: string; rules: { name: string; health: string }[] }[] }
    }
    const group = rules.data.groups.find((g) => g.name === 'fastify-pg-pool')
    expect(group?.rules.map((r) => [r.name, r.health])).toEqual([
      ['PgPoolSaturated', 'ok'],
      ['PgPoolWaitersRising', 'ok'],
      ['PgPoolAcquireTimeouts', 'ok'],
      ['PgPoolShedding', 'ok'],
      ['PgPoolLeaks', 'ok'],
      ['PgPoolListenerDown', 'ok'],
      ['PgPoolReplicaUnusable', 'ok'],
    ])

    const dashboard = JSON.parse(readFileSync(new URL('grafana-dashboard.json', examples), 'utf8')) as {
      panels: { title: string; targets: { expr: string }[] }[]
    }
    const empty: string[] = []
    for (const panel of dashboard.panels) {
      for (const { expr } of panel.targets) {
        const promql = expr
          .replaceAll('$__rate_interval', '1m')
          .replaceAll('$job', '.*')
          .replaceAll('$instance', '.*')
          .replaceAll('$pool', '.*')
        if ((await query(promql)).length === 0) empty.push(`${panel.title}: ${expr}`)
      }
    }
    expect(empty).toEqual([])
  })
})

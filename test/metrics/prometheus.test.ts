import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { buildApp } from '../../examples/observability/src/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { freePort } from '../support/embedded-server.js'
import { listen, startRequest } from '../support/http.js'
import { prometheusTool } from '../support/tools.js'

const prometheusBin = prometheusTool('prometheus', 'real Prometheus test')
const examples = new URL('../../examples/observability/', import.meta.url)

interface PromSeries {
  metric: Record<string, string>
  value: [number, string]
}

let db: TestDatabase
let app: FastifyInstance
let prometheus: ChildProcess | undefined
let dir: string | undefined
let api = ''
let url = ''
const accepts: string[] = []

async function query(promql: string): Promise<PromSeries[]> {
  const response = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(promql)}`)
  const body = (await response.json()) as { status: string; error?: string; data: { result: PromSeries[] } }
  if (body.status !== 'success') throw new Error(`${promql}: ${body.error}`)
  return body.data.result
}

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
  const target = new URL(url).host
  dir = await mkdtemp(join(tmpdir(), 'fpp-prometheus-'))
  const port = await freePort()
  api = `http://127.0.0.1:${port}`
  const config = join(dir, 'prometheus.yml')
  await writeFile(
    config,
    [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      `rule_files: ['${new URL('prometheus-rules.yml', examples).pathname}']`,
      'scrape_configs:',
      '  - job_name: example',
      `    static_configs: [{ targets: ['${target}'] }]`,
      '',
    ].join('\n'),
  )
  prometheus = spawn(
    prometheusBin as string,
    [
      `--config.file=${config}`,
      `--web.listen-address=127.0.0.1:${port}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  )
  await eventually(
    async () => (await fetch(`${api}/-/ready`)).status,
    (status) => status === 200,
    'Prometheus to be ready',
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
  if (prometheus && prometheus.exitCode === null) {
    const exited = new Promise((resolve) => prometheus?.once('exit', resolve))
    prometheus.kill('SIGTERM')
    await exited
  }
  if (dir) await rm(dir, { recursive: true, force: true })
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
    const targets = (await (await fetch(`${api}/api/v1/targets`)).json()) as {
      data: { activeTargets: { health: string; lastError: string }[] }
    }
    expect(targets.data.activeTargets).toEqual([expect.objectContaining({ health: 'up', lastError: '' })])
  })

  test('the alert rules load and every dashboard query runs and returns series', async () => {
    const rules = (await (await fetch(`${api}/api/v1/rules`)).json()) as {
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

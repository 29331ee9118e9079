import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { parse } from 'yaml'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { prometheusTool } from '../support/tools.js'
import { parseExposition } from './exposition.js'

const promtool = prometheusTool('promtool', 'promtool rule checks')
const dir = fileURLToPath(new URL('../../examples/observability/', import.meta.url))
const read = (file: string) => readFileSync(`${dir}${file}`, 'utf8')

function run(...args: string[]): { status: number | null; output: string } {
  const result = spawnSync(promtool as string, args, { cwd: dir, encoding: 'utf8', timeout: 20_000 })
  return { status: result.status, output: `${result.stdout}${result.stderr}` }
}

interface RuleFile {
  groups: { name: string; rules: { alert: string; expr: string }[] }[]
}
interface RuleTests {
  rule_files: string[]
  tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[]
}
interface Dashboard {
  panels: { title: string; targets: { expr: string }[] }[]
  templating: { list: { query?: string | { query: string } }[] }
}

const rules = parse(read('prometheus-rules.yml')) as RuleFile
const alerts = rules.groups.flatMap((group) => group.rules)
const dashboard = JSON.parse(read('grafana-dashboard.json')) as Dashboard

/** Every series name the plugin exports (histograms as _bucket, _sum, _count), from a real scrape. */
let exported: Set<string>
let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
  const { app } = await coreApp(db.url, { max: 1 })
  try {
    await app.register(pgPoolMetrics)
    const m = parseExposition((await app.inject({ url: '/metrics' })).body)
    exported = new Set()
    for (const [name, type] of m.types) {
      if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exported.add(`${name}${suffix}`)
      else exported.add(name)
    }
  } finally {
    await app.close()
  }
})
afterAll(() => db.drop())

function metricNames(promql: string): string[] {
  // Names of series, not functions or labels: identifiers with the plugin's prefix.
  return [...promql.matchAll(/\bpg_pool_[a-zA-Z0-9_]+/g)].map((m) => m[0])
}

// Skipped only without promtool outside CI (see test/support/tools.ts).
describe.skipIf(promtool === undefined)('alert rules', () => {
  test('promtool check rules accepts the rule file', () => {
    const { status, output } = run('check', 'rules', 'prometheus-rules.yml')
    expect(output).toContain(`SUCCESS: ${alerts.length} rules found`)
    expect(status).toBe(0)
  })

  test('promtool test rules passes', () => {
    const { status, output } = run('test', 'rules', 'prometheus-rules.test.yml')
    expect(output).toContain('SUCCESS')
    expect(status).toBe(0)
  })
})

describe('the rules and their tests', () => {
  test('cover pool saturated, waiters rising, acquire timeouts and shedding', () => {
    expect(alerts.map((rule) => rule.alert)).toEqual(
      expect.arrayContaining(['PgPoolSaturated', 'PgPoolWaitersRising', 'PgPoolAcquireTimeouts', 'PgPoolShedding']),
    )
  })

  test('every rule has a test where it fires and one where it does not', () => {
    const tests = parse(read('prometheus-rules.test.yml')) as RuleTests
    expect(tests.rule_files).toEqual(['prometheus-rules.yml'])
    const cases = tests.tests.flatMap((t) => t.alert_rule_test)
    for (const { alert } of alerts) {
      const mine = cases.filter((c) => c.alertname === alert)
      expect(
        mine.some((c) => c.exp_alerts.length > 0),
        `${alert} fires in a test`,
      ).toBe(true)
      expect(
        mine.some((c) => c.exp_alerts.length === 0),
        `${alert} stays quiet in a test`,
      ).toBe(true)
    }
  })

  test('rules use only metric names the plugin exports', () => {
    for (const { alert, expr } of alerts) {
      const names = metricNames(expr)
      expect(names.length, alert).toBeGreaterThan(0)
      for (const name of names) expect(exported.has(name), `${alert}: ${name}`).toBe(true)
    }
  })
})

describe('the Grafana dashboard', () => {
  test('has the panels the issue asks for', () => {
    const titles = dashboard.panels.map((panel) => panel.title)
    for (const title of ['Pool utilisation', 'Waiters', 'Acquire wait p95 / p99', 'Shed rate', 'HTTP latency']) {
      expect(
        titles.some((t) => t.startsWith(title)),
        title,
      ).toBe(true)
    }
    const acquire = dashboard.panels.find((panel) => panel.title.startsWith('Acquire wait'))
    expect(acquire?.targets.map((t) => t.expr.slice(0, 24))).toEqual([
      'histogram_quantile(0.95,',
      'histogram_quantile(0.99,',
    ])
  })

  test('queries use only metric names the plugin exports', () => {
    const exprs = [
      ...dashboard.panels.flatMap((panel) => panel.targets.map((t) => t.expr)),
      ...dashboard.templating.list.map((v) => (typeof v.query === 'string' ? v.query : (v.query?.query ?? ''))),
    ]
    const used = new Set(exprs.flatMap(metricNames))
    expect(used.size).toBeGreaterThan(10)
    expect([...used].filter((name) => !exported.has(name))).toEqual([])
  })
})

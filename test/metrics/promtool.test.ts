import { spawnSync } from 'node:child_process'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { buildApp } from '../../examples/observability/src/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'
import { prometheusTool } from '../support/tools.js'
import { parseExposition } from './exposition.js'

const promtool = prometheusTool('promtool', 'promtool check metrics')

function checkMetrics(text: string): { status: number | null; output: string } {
  const result = spawnSync(promtool as string, ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 10_000 })
  return { status: result.status, output: `${result.stdout}${result.stderr}` }
}

let db: TestDatabase
let app: FastifyInstance
let base: string
beforeAll(async () => {
  db = await createTestDatabase()
  app = await buildApp({ connection: db.url, logger: false, pool: { max: 3, acquireTimeout: 200 } })
  base = await listen(app)
})
afterAll(async () => {
  await app?.close()
  await db?.drop()
})

// Skipped only without promtool outside CI (see test/support/tools.ts).
describe.skipIf(promtool === undefined)('promtool check metrics', () => {
  test('the example app’s /metrics under load has no problems', async () => {
    const load = [
      ...Array.from({ length: 30 }, (_, i) => fetch(`${base}/items/${i + 1}`)),
      fetch(`${base}/items/500`),
      fetch(`${base}/nope`),
    ]
    await new Promise((resolve) => setTimeout(resolve, 50))
    // Every connection held for 500 ms: the requests behind them time out after 200 ms.
    load.push(
      ...Array.from({ length: 3 }, () => fetch(`${base}/slow?ms=500`)),
      ...Array.from({ length: 10 }, (_, i) => fetch(`${base}/items/${i + 1}`)),
    )
    // Mid-load: connections leased, requests waiting (waited for: on a loaded machine the
    // requests can take longer than a fixed pause to arrive).
    await waitUntil(() => app.pgPool.stats().leased === 3, 'every connection leased')
    const during = await (await fetch(`${base}/metrics`)).text()
    const statuses = (await Promise.all(load)).map((r) => r.status)
    const after = await (await fetch(`${base}/metrics`)).text()

    // The load did what it should: successes, acquire timeouts (503), a 404.
    expect(statuses.filter((s) => s === 503).length).toBeGreaterThan(0)
    expect(statuses).toContain(404)
    const m = parseExposition(after)
    const refused =
      m.value('pg_pool_acquires_total', { result: 'timeout' }) +
      m.value('pg_pool_acquires_total', { result: 'rejected' })
    expect(refused).toBe(statuses.filter((s) => s === 503).length)
    expect(m.value('pg_pool_acquires_total', { result: 'ok' })).toBe(statuses.filter((s) => s !== 503).length - 1)
    expect(parseExposition(during).value('pg_pool_connections', { state: 'leased' })).toBeGreaterThan(0)

    for (const text of [during, after]) {
      const { status, output } = checkMetrics(text)
      expect(output).toBe('')
      expect(status).toBe(0)
    }
  })

  test('promtool does report problems: a broken exposition fails the check', () => {
    const { status, output } = checkMetrics('# TYPE broken counter\nbroken 1\n')
    expect(status).not.toBe(0)
    expect(output).toMatch(/broken/)
  })
})

// Round sixteen (life-cycle probe): apps built and closed in one process (a test suite, a
// hot-reloading dev server) with `metrics: { defaultMetrics: true }`. Each app's
// collectDefaultMetrics started a GC PerformanceObserver and an event-loop delay monitor that
// nothing ever stopped (prom-client has no way to): after app.close() they went on running, and
// each held the closed app's metric registry. Ten apps left ten GC observers (each called on
// every garbage collection for the life of the process) and ten registries: memory and work that
// grow with every app built and closed, where the contract is that close() leaves nothing behind.
// The Node process metrics are the process's: collected once per process, served by every app
// that asks for them.
import { PerformanceObserver } from 'node:perf_hooks'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../../../metrics/exposition.js'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../../support/database.js'
import { collectGarbage, liveObjects } from '../../../support/growth-kit.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

async function cycle(registry?: Registry): Promise<ReadonlyMap<string, string>> {
  const app = Fastify()
  await app.register(pgPool, {
    connection: db.directUrl,
    pool: { max: 1, applicationName: uniqueName('dm') },
    metrics: { defaultMetrics: true, ...(registry === undefined ? {} : { registry }) },
  })
  const scrape = await app.inject('/metrics')
  expect(scrape.statusCode).toBe(200)
  await app.close()
  return parseExposition(scrape.body).types
}

test('ten apps with defaultMetrics built and closed: no GC observer or registry left per app', {
  timeout: 60_000,
}, async () => {
  // The first app may start what the process keeps once.
  expect((await cycle()).get('process_cpu_seconds_total')).toBe('counter')
  await collectGarbage()
  const before = { observers: liveObjects(PerformanceObserver), registries: liveObjects(Registry) }
  for (let i = 0; i < 10; i++) {
    const types = await cycle()
    expect(types.get('nodejs_gc_duration_seconds')).toBe('histogram')
    expect(types.get('nodejs_eventloop_lag_p99_seconds')).toBe('gauge')
  }
  await collectGarbage()
  expect(liveObjects(PerformanceObserver)).toBe(before.observers)
  // One more at most, whatever the number of apps: postgres.js's origin cache keeps the call
  // site of a first query, and with it that query's app (test/core/long-run-growth.test.ts).
  expect(liveObjects(Registry)).toBeLessThanOrEqual(before.registries + 1)
})

test('an injected registry gets the process metrics, and gives them back at close', async () => {
  const registry = new Registry()
  expect((await cycle(registry)).get('nodejs_heap_size_used_bytes')).toBe('gauge')
  expect(registry.getMetricsAsArray().map((metric) => metric.name)).toEqual([])
  // The same registry serves the next app (a reload), the process metrics included.
  expect((await cycle(registry)).get('process_start_time_seconds')).toBe('gauge')
})

test('two apps into one registry, both with defaultMetrics: the second is still refused as a duplicate', async () => {
  const registry = new Registry()
  const first = Fastify()
  await first.register(pgPool, {
    connection: db.directUrl,
    pool: { max: 1, applicationName: uniqueName('dm') },
    metrics: { defaultMetrics: true, registry },
  })
  const second = Fastify()
  await expect(
    second.register(pgPool, {
      connection: db.directUrl,
      pool: { max: 1, applicationName: uniqueName('dm') },
      metrics: { defaultMetrics: true, registry, namePrefix: 'second_' },
    }),
  ).rejects.toMatchObject({ code: 'FST_PG_POOL_METRICS_DUPLICATE' })
  await second.close()
  // The first app's process metrics are still served.
  expect(parseExposition((await first.inject('/metrics')).body).types.get('process_cpu_seconds_total')).toBe('counter')
  await first.close()
})

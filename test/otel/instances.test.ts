import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel, { ATTR, METRIC } from '@fastify-pg-pool/otel'
import type { MetricData, ResourceMetrics } from '@opentelemetry/sdk-metrics'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../support/database.js'
import { startTestSdk, type TestSdk } from './sdk.js'

declare module '@fastify-pg-pool/core' {
  interface PgPoolInstances {
    reporting: true
  }
}

// Named instances (issue 19): the plugin instruments every pool of app.pgPools, those
// registered after it too; the default instance's primary is named host:port/database, any
// other pool by its own name.

let main: TestDatabase
let reporting: TestDatabase
let sdk: TestSdk
let app: FastifyInstance | undefined

beforeAll(async () => {
  main = await createTestDatabase()
  reporting = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await sdk.shutdown()
})
afterAll(async () => {
  await main.drop()
  await reporting.drop()
})

async function twoInstances(otelFirst: boolean): Promise<FastifyInstance> {
  sdk = startTestSdk()
  const instance = Fastify()
  const name = uniqueName('otel')
  await instance.register(pgPoolCore, {
    connection: main.directUrl,
    pool: { max: 2, pgbouncer: false, applicationName: name },
  })
  const named = () =>
    instance.register(pgPoolCore, {
      name: 'reporting',
      connection: reporting.directUrl,
      pool: { max: 3, pgbouncer: false, applicationName: `${name}-r` },
    })
  if (!otelFirst) await named()
  await instance.register(pgPoolOtel, { meterProvider: sdk.meterProvider, tracerProvider: sdk.tracerProvider })
  if (otelFirst) await named()
  instance.get('/main', async (request) => (await request.db`select 1 as one`)[0])
  instance.get('/reporting', async (request) => (await request.dbs.reporting`select 1 as one`)[0])
  await instance.ready()
  return instance
}

function metric(collected: ResourceMetrics, name: string): MetricData {
  for (const scope of collected.scopeMetrics) {
    if (scope.scope.name !== '@fastify-pg-pool/otel') continue
    const found = scope.metrics.find((m) => m.descriptor.name === name)
    if (found !== undefined) return found
  }
  throw new Error(`no metric ${name}`)
}

const pointValue = (data: MetricData, pool: string, extra: Record<string, string> = {}) =>
  data.dataPoints.find(
    (p) => p.attributes[ATTR.poolName] === pool && Object.entries(extra).every(([k, v]) => p.attributes[k] === v),
  )?.value

describe('OpenTelemetry with two instances', () => {
  for (const otelFirst of [false, true]) {
    test(`both pools' metrics and spans carry their pool name (${otelFirst ? 'named instance registered after the plugin' : 'both before'})`, async () => {
      app = await twoInstances(otelFirst)
      const current = app
      const primaryName = current.pgPool.target
      expect(primaryName).toMatch(/^[^@]+:\d+\/t_/)
      expect(current.pgPoolOtel.poolNames).toEqual([primaryName, 'reporting'])

      for (let i = 0; i < 2; i++) expect((await current.inject('/main')).statusCode).toBe(200)
      for (let i = 0; i < 3; i++) expect((await current.inject('/reporting')).statusCode).toBe(200)
      await waitUntil(() => current.pgPools.all().every((view) => view.stats().leased === 0), 'every lease back')

      const collected = await sdk.collect()
      const max = metric(collected, METRIC.max)
      expect(pointValue(max, primaryName)).toBe(2)
      expect(pointValue(max, 'reporting')).toBe(3)
      const count = metric(collected, METRIC.connectionCount)
      for (const view of current.pgPools.all()) {
        const pool = view === current.pgPool ? primaryName : view.name
        expect(pointValue(count, pool, { [ATTR.connectionState]: 'idle' })).toBe(view.stats().idle)
      }
      const uses = (pool: string) => (pointValue(metric(collected, METRIC.useTime), pool) as { count: number }).count
      expect(uses(primaryName)).toBe(2)
      expect(uses('reporting')).toBe(3)

      const byPool = (pool: string) =>
        metric(collected, METRIC.operationDuration).dataPoints.filter((p) => p.attributes[ATTR.poolName] === pool)
      expect(byPool(primaryName).length).toBeGreaterThan(0)
      expect(byPool('reporting').length).toBeGreaterThan(0)
      // Statement spans name each pool's own database.
      const database = (db: TestDatabase) => new URL(db.directUrl).pathname.slice(1)
      const selects = (db: TestDatabase) =>
        sdk.spans().filter((span) => span.attributes[ATTR.dbNamespace] === database(db) && /select/i.test(span.name))
      expect(selects(main).length).toBeGreaterThanOrEqual(2)
      expect(selects(reporting).length).toBeGreaterThanOrEqual(3)
    })
  }
})

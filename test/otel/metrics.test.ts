import type { PoolOptions } from '@fastify-pg-pool/core'
import { DURATION_BUCKETS, METRIC } from '@fastify-pg-pool/otel'
import { DataPointType, type MetricData, type ResourceMetrics } from '@opentelemetry/sdk-metrics'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { closeGate, createTables, type OtelApp, otelApp, type PasswordRole, passwordRole } from './helpers.js'
import { startTestSdk, type TestSdk } from './sdk.js'

let db: TestDatabase
let role: PasswordRole
let sdk: TestSdk
const apps: OtelApp[] = []

beforeAll(async () => {
  db = await createTestDatabase()
  await createTables(db)
  role = await passwordRole(db)
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map(({ app }) => app.close()))
  await sdk.shutdown()
})
afterAll(async () => {
  await role.drop()
  await db.drop()
})

/** An app whose metrics go to a provider given as an option (no global SDK, no spans). */
async function start(pool: PoolOptions = {}): Promise<OtelApp> {
  sdk = startTestSdk()
  const started = await otelApp(role.url, { pool, otel: { meterProvider: sdk.meterProvider } })
  apps.push(started)
  return started
}

function metricsOf(collected: ResourceMetrics): Map<string, MetricData> {
  const out = new Map<string, MetricData>()
  for (const scope of collected.scopeMetrics) {
    if (scope.scope.name !== '@fastify-pg-pool/otel') continue
    for (const metric of scope.metrics) out.set(metric.descriptor.name, metric)
  }
  return out
}

function metric(all: Map<string, MetricData>, name: string): MetricData {
  const found = all.get(name)
  if (found === undefined) throw new Error(`no metric ${name}; got ${[...all.keys()].join(', ')}`)
  return found
}

/** The value of the point whose attributes include `match`. */
function pointValue(data: MetricData, match: Record<string, string>): unknown {
  const point = data.dataPoints.find((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v))
  return point?.value
}

describe('database-client metrics', () => {
  test('names, units, instrument kinds and attributes match the conventions', async () => {
    const { app } = await start({ max: 3, lazy: true })
    const pool = app.pgPool.target
    // The lazy pool also leases once for its budget check after the first connect.
    let acquires = 0
    let releases = 0
    let connects = 0
    app.pgPool.on('acquire', () => acquires++)
    app.pgPool.on('release', () => releases++)
    app.pgPool.on('connect', () => connects++)
    for (let i = 0; i < 3; i++) expect((await app.inject('/item/1')).statusCode).toBe(200)
    expect((await app.inject({ method: 'POST', url: '/move' })).statusCode).toBe(200)
    expect((await app.inject({ url: '/fail', query: { value: 'x' } })).statusCode).toBeGreaterThanOrEqual(400)
    await waitUntil(
      () => app.pgPool.stats().leased === 0 && app.pgPool.stats().connecting === 0,
      'every lease back (the budget check too), no connection opening',
    )
    const leases = { acquires, releases, connects }
    const all = metricsOf(await sdk.collect())

    const expected: [string, string, DataPointType, boolean | undefined][] = [
      [METRIC.connectionCount, '{connection}', DataPointType.SUM, false],
      [METRIC.idleMax, '{connection}', DataPointType.SUM, false],
      [METRIC.idleMin, '{connection}', DataPointType.SUM, false],
      [METRIC.max, '{connection}', DataPointType.SUM, false],
      [METRIC.pendingRequests, '{request}', DataPointType.SUM, false],
      [METRIC.createTime, 's', DataPointType.HISTOGRAM, undefined],
      [METRIC.waitTime, 's', DataPointType.HISTOGRAM, undefined],
      [METRIC.useTime, 's', DataPointType.HISTOGRAM, undefined],
      [METRIC.operationDuration, 's', DataPointType.HISTOGRAM, undefined],
    ]
    for (const [name, unit, type, monotonic] of expected) {
      const data = metric(all, name)
      expect(data.descriptor.unit, name).toBe(unit)
      expect(data.dataPointType, name).toBe(type)
      if (monotonic !== undefined) expect((data as { isMonotonic: boolean }).isMonotonic, name).toBe(monotonic)
      for (const point of data.dataPoints) expect(point.attributes['db.client.connection.pool.name'], name).toBe(pool)
    }

    // Read from stats() at collection: everything idle now, nothing waiting.
    const count = metric(all, METRIC.connectionCount)
    expect(count.dataPoints.map((p) => p.attributes['db.client.connection.state']).sort()).toEqual(['idle', 'used'])
    expect(pointValue(count, { 'db.client.connection.state': 'used' })).toBe(0)
    expect(pointValue(count, { 'db.client.connection.state': 'idle' })).toBe(app.pgPool.stats().idle)
    expect(metric(all, METRIC.max).dataPoints[0]?.value).toBe(3)
    expect(metric(all, METRIC.idleMax).dataPoints[0]?.value).toBe(3)
    expect(metric(all, METRIC.idleMin).dataPoints[0]?.value).toBe(0)
    expect(metric(all, METRIC.pendingRequests).dataPoints[0]?.value).toBe(0)

    // One wait and one use per lease; the lazy pool opened its connections after we subscribed.
    const histogramCount = (name: string) =>
      metric(all, name).dataPoints.reduce((n, p) => n + (p.value as { count: number }).count, 0)
    expect(leases.acquires).toBeGreaterThanOrEqual(5)
    expect(histogramCount(METRIC.waitTime)).toBe(leases.acquires)
    expect(histogramCount(METRIC.useTime)).toBe(leases.releases)
    expect(leases.connects).toBeGreaterThanOrEqual(1)
    expect(histogramCount(METRIC.createTime)).toBe(leases.connects)

    // The stable operation metric: the conventions' buckets and attributes.
    const duration = metric(all, METRIC.operationDuration)
    for (const point of duration.dataPoints) {
      expect((point.value as { buckets: { boundaries: number[] } }).buckets.boundaries).toEqual([...DURATION_BUCKETS])
    }
    expect(DURATION_BUCKETS).toEqual([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10])
    const { host, port, database } = app.pgPool.endpoint
    const select = duration.dataPoints.find((p) => p.attributes['db.query.summary'] === 'select items')
    expect(select?.attributes).toEqual({
      'db.system.name': 'postgresql',
      'db.namespace': database,
      'server.address': host,
      'server.port': port,
      'db.operation.name': 'select',
      'db.query.summary': 'select items',
      'db.client.connection.pool.name': pool,
    })
    expect((select?.value as { count: number } | undefined)?.count).toBe(3)
    const failed = duration.dataPoints.find((p) => p.attributes['error.type'] !== undefined)
    expect(failed?.attributes).toMatchObject({ 'error.type': '22P02', 'db.response.status_code': '22P02' })
    const summaries = duration.dataPoints.map((p) => p.attributes['db.query.summary']).sort()
    expect(summaries).toEqual(expect.arrayContaining(['BEGIN', 'COMMIT', 'select', 'select items', 'update items']))
  })

  test('while requests wait: pending_requests and used connections, read at collection', async () => {
    const { app } = await start({ max: 1 })
    const gate = await closeGate(db)
    const holder = app.inject('/gate')
    await waitUntil(() => app.pgPool.stats().leased === 1, 'the gate request to hold the connection')
    const waiters = [app.inject('/item/1'), app.inject('/item/2')]
    await waitUntil(() => app.pgPool.stats().waiting === 2, 'two waiters')
    const during = metricsOf(await sdk.collect())
    expect(metric(during, METRIC.pendingRequests).dataPoints[0]?.value).toBe(2)
    expect(pointValue(metric(during, METRIC.connectionCount), { 'db.client.connection.state': 'used' })).toBe(1)
    expect(pointValue(metric(during, METRIC.connectionCount), { 'db.client.connection.state': 'idle' })).toBe(0)
    await gate.open()
    await Promise.all([holder, ...waiters])
    const after = metricsOf(await sdk.collect())
    expect(metric(after, METRIC.pendingRequests).dataPoints[0]?.value).toBe(0)
  })

  test('an acquire that times out counts in db.client.connection.timeouts', async () => {
    const { app } = await start({ max: 1, acquireTimeout: 100 })
    const gate = await closeGate(db)
    const holder = app.inject('/gate')
    await waitUntil(() => app.pgPool.stats().leased === 1, 'the gate request to hold the connection')
    // The gate stays closed until this request has its answer: it can only time out.
    const timedOut = await app.inject('/item/1')
    expect(timedOut.statusCode).toBe(503)
    expect(timedOut.json().code).toBe('FST_PG_POOL_ACQUIRE_TIMEOUT')
    await gate.open()
    await holder
    const all = metricsOf(await sdk.collect())
    const timeouts = metric(all, METRIC.timeouts)
    expect(timeouts.descriptor.unit).toBe('{timeout}')
    expect(timeouts.dataPointType).toBe(DataPointType.SUM)
    expect((timeouts as { isMonotonic: boolean }).isMonotonic).toBe(true)
    expect(timeouts.dataPoints.map((p) => [p.attributes, p.value])).toEqual([
      [{ 'db.client.connection.pool.name': app.pgPool.target }, 1],
    ])
  })

  test('no parameter value and no password in any metric attribute', async () => {
    const { app } = await start()
    const secret = `secret-${Date.now()}`
    await app.inject({ method: 'POST', url: '/insert', payload: { value: secret } })
    await app.inject({ url: '/fail', query: { value: secret } })
    const text = JSON.stringify((await sdk.collect()).scopeMetrics.map((s) => s.metrics.map((m) => m.dataPoints)))
    expect(text).toContain('insert notes')
    expect(text).not.toContain(secret)
    expect(text).not.toContain(role.password)
  })

  test('after close, the gauges are no longer read and the pool is no longer listened to', async () => {
    const { app } = await start()
    await app.inject('/item/1')
    await app.close()
    apps.splice(0)
    const all = metricsOf(await sdk.collect())
    expect(all.get(METRIC.connectionCount)?.dataPoints ?? []).toEqual([])
  })
})

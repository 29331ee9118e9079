import { readFileSync } from 'node:fs'
import { channels, errors as coreErrors } from '@fastify-pg-pool/core'
import * as metricsPackage from '@fastify-pg-pool/metrics'
import pgPoolMetrics, { errors, negotiate, type PgPoolMetricsOptions } from '@fastify-pg-pool/metrics'
import type { FastifyInstance } from 'fastify'
import { Counter, openMetricsContentType, Registry } from 'prom-client'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { parseExposition } from './exposition.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

const apps: FastifyInstance[] = []
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})

async function metricsApp(options: PgPoolMetricsOptions = {}): Promise<FastifyInstance> {
  const { app } = await coreApp(db.url, { max: 2 })
  apps.push(app)
  await app.register(pgPoolMetrics, options)
  app.get('/item', async (request) => (await request.db`select 1 as one`)[0])
  await app.ready()
  return app
}

function openMetricsRegistry(): Registry {
  const registry = new Registry()
  ;(registry as unknown as { setContentType(type: string): void }).setContentType(openMetricsContentType)
  return registry
}

// What Prometheus 2.42 sends by default.
const prometheusAccept =
  'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'

describe('exports', () => {
  test('the plugin is the default and a named export, with fastify-plugin metadata', () => {
    expect(pgPoolMetrics).toBe(metricsPackage.pgPoolMetrics)
    const meta = (pgPoolMetrics as unknown as Record<symbol, unknown>)[Symbol.for('plugin-meta')]
    expect(meta).toMatchObject({
      name: '@fastify-pg-pool/metrics',
      fastify: '5.x',
      dependencies: ['@fastify-pg-pool/core'],
    })
    expect(Object.keys(metricsPackage).sort()).toEqual([
      'UNMATCHED_ROUTE',
      'default',
      'defaultBuckets',
      'errors',
      'knownShedReasons',
      'negotiate',
      'pgPoolMetrics',
    ])
  })

  test('bad options raise the core’s error class: one vocabulary for the suite', () => {
    expect(errors.FST_PG_POOL_INVALID_OPTION).toBe(coreErrors.FST_PG_POOL_INVALID_OPTION)
  })

  test('every error code is documented in the README with its status', () => {
    const readme = readFileSync(new URL('../../packages/metrics/README.md', import.meta.url), 'utf8')
    for (const [code, ErrorClass] of Object.entries(errors)) {
      const status = new (ErrorClass as new (...a: unknown[]) => { statusCode: number })('x', 'y').statusCode
      expect(readme, code).toMatch(new RegExp(`\\|\\s*\`${code}\`\\s*\\|\\s*${status}\\s*\\|`))
    }
  })

  test('registering without the core fails with fastify-plugin’s dependency error', async () => {
    const { default: Fastify } = await import('fastify')
    const app = Fastify()
    app.register(pgPoolMetrics)
    await expect(app.ready()).rejects.toThrow(/@fastify-pg-pool\/core/)
  })
})

describe('/metrics', () => {
  test('serves Prometheus text by default and never touches the database', async () => {
    const app = await metricsApp()
    const before = app.pgPool.stats()
    const response = await app.inject({ url: '/metrics' })
    expect(response.statusCode).toBe(200)
    expect(response.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8')
    expect(response.body).toContain('# TYPE pg_pool_acquires_total counter')
    const m = parseExposition(response.body)
    expect(m.value('pg_pool_acquires_total', { result: 'ok' })).toBe(0)
    const after = app.pgPool.stats()
    expect(after).toEqual({ ...before, oldestWaitMs: after.oldestWaitMs })
  })

  test('serves OpenMetrics when the scraper asks for it, without changing the Prometheus text after', async () => {
    const app = await metricsApp()
    expect((await app.inject({ url: '/item' })).statusCode).toBe(200)
    const open = await app.inject({ url: '/metrics', headers: { accept: prometheusAccept } })
    expect(open.headers['content-type']).toBe('application/openmetrics-text; version=1.0.0; charset=utf-8')
    expect(open.body.endsWith('\n# EOF\n')).toBe(true)
    expect(open.body).toContain('# TYPE pg_pool_acquires counter\n')
    expect(open.body).toContain('pg_pool_acquires_total{pool="primary",result="ok"} 1\n')
    expect(open.body).toContain('# TYPE pg_pool_acquire_seconds histogram\n')
    expect(open.body).toContain('pg_pool_acquire_seconds_bucket{le="+Inf",pool="primary"} 1\n')
    expect(open.body).not.toContain('\n\n')

    // prom-client's own OpenMetrics mode renames counters for good; the text format must not change.
    const text = await app.inject({ url: '/metrics', headers: { accept: 'text/plain;version=0.0.4' } })
    expect(text.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8')
    expect(text.body).toContain('# TYPE pg_pool_acquires_total counter')
    expect(parseExposition(text.body).value('pg_pool_acquires_total', { result: 'ok' })).toBe(1)
  })

  test('content negotiation follows the q values', () => {
    expect(negotiate(undefined)).toBe('prometheus')
    expect(negotiate('*/*')).toBe('prometheus')
    expect(negotiate('text/plain;version=0.0.4')).toBe('prometheus')
    expect(negotiate(prometheusAccept)).toBe('openmetrics')
    expect(negotiate('application/openmetrics-text; version=1.0.0; charset=utf-8')).toBe('openmetrics')
    expect(negotiate('application/openmetrics-text;q=0.2,text/plain;q=0.9')).toBe('prometheus')
    expect(negotiate('application/openmetrics-text;q=0')).toBe('prometheus')
  })

  test('a custom path, or none at all with app.pgPoolMetrics.scrape() still available', async () => {
    const custom = await metricsApp({ path: '/internal/metrics' })
    expect((await custom.inject({ url: '/metrics' })).statusCode).toBe(404)
    expect((await custom.inject({ url: '/internal/metrics' })).body).toContain('pg_pool_waiters{pool="primary"} 0')

    const none = await metricsApp({ path: false })
    expect((await none.inject({ url: '/metrics' })).statusCode).toBe(404)
    const scraped = await none.pgPoolMetrics.scrape()
    expect(scraped.body).toContain('pg_pool_waiters{pool="primary"} 0')
    expect((await none.pgPoolMetrics.scrape(prometheusAccept)).body).toContain('# EOF')
  })

  test('an onRequest hook protects the route and nothing else', async () => {
    const app = await metricsApp({
      onRequest: async (request, reply) => {
        if (request.headers.authorization !== 'Bearer s3cret') await reply.code(401).send({ message: 'unauthorized' })
      },
    })
    expect((await app.inject({ url: '/metrics' })).statusCode).toBe(401)
    expect((await app.inject({ url: '/metrics', headers: { authorization: 'Bearer nope' } })).statusCode).toBe(401)
    const ok = await app.inject({ url: '/metrics', headers: { authorization: 'Bearer s3cret' } })
    expect(ok.statusCode).toBe(200)
    expect(ok.body).toContain('pg_pool_connections_max{pool="primary"} 2')
    expect((await app.inject({ url: '/item' })).statusCode).toBe(200)
  })

  test('refusals published on the refusal channel are counted by reason, bounded; other pools are not', async () => {
    const app = await metricsApp()
    const before = parseExposition((await app.inject({ url: '/metrics' })).body)
    expect(before.find('pg_pool_requests_shed_total').map((s) => [s.labels.reason, s.value])).toEqual([
      ['queue_full', 0],
      ['queue_delay', 0],
      ['process', 0],
    ])
    const refuse = (reason: string, pool = app.pgPool) =>
      channels.refusal.publish({ pool, route: '/item', reason, request: undefined })
    refuse('queue_full')
    refuse('queue_full')
    refuse('process')
    for (let i = 0; i < 30; i++) refuse(`made_up_${i}`)
    // Another app's pool (same process): not counted here.
    refuse('queue_full', { ...app.pgPool })
    const m = parseExposition((await app.inject({ url: '/metrics' })).body)
    expect(m.value('pg_pool_requests_shed_total', { reason: 'queue_full' })).toBe(2)
    expect(m.value('pg_pool_requests_shed_total', { reason: 'process' })).toBe(1)
    expect(m.value('pg_pool_requests_shed_total', { reason: 'queue_delay' })).toBe(0)
    // 20 distinct reasons at most; the rest share "other".
    expect(m.find('pg_pool_requests_shed_total')).toHaveLength(21)
    expect(m.value('pg_pool_requests_shed_total', { reason: 'other' })).toBe(13)
  })

  test('the connection budget appears as gauges once the core read it', async () => {
    const app = await metricsApp()
    const [row] = await db.sql<{ max: number }[]>`select current_setting('max_connections')::int as max`
    const m = parseExposition((await app.inject({ url: '/metrics' })).body)
    const budget = app.pgPool.budget()
    if (budget === undefined) {
      expect(m.find('pg_pool_server_max_connections')).toEqual([])
    } else {
      expect(m.value('pg_pool_server_max_connections')).toBe(row?.max)
      expect(m.value('pg_pool_server_reserved_connections')).toBe(budget.reserved)
      expect(m.value('pg_pool_connections_demand')).toBe(2)
    }
  })
})

describe('options', () => {
  test('a custom registry and name prefix: the app’s metrics sit beside the user’s and leave on close', async () => {
    const registry = new Registry()
    const mine = new Counter({ name: 'orders_total', help: 'Orders', registers: [registry] })
    mine.inc(3)
    const app = await metricsApp({ registry, namePrefix: 'shop_db_' })
    expect(app.pgPoolMetrics.registry).toBe(registry)
    expect((await app.inject({ url: '/item' })).statusCode).toBe(200)
    const m = parseExposition((await app.inject({ url: '/metrics' })).body)
    expect(m.value('orders_total')).toBe(3)
    expect(m.value('shop_db_acquires_total', { result: 'ok' })).toBe(1)
    expect(m.value('shop_db_http_request_duration_seconds_count', { route: '/item' })).toBe(1)
    expect(m.find('pg_pool_acquires_total')).toEqual([])
    expect(registry.getSingleMetric('shop_db_waiters')).toBeDefined()

    await app.close()
    expect(registry.getMetricsAsArray().map((metric) => metric.name)).toEqual(['orders_total'])
  })

  test('two apps on one registry need different name prefixes: a coded error says so', async () => {
    const registry = new Registry()
    await metricsApp({ registry })
    await expect(metricsApp({ registry })).rejects.toMatchObject({
      code: 'FST_PG_POOL_METRICS_DUPLICATE',
      message: expect.stringContaining('pg_pool_connections'),
    })
    await metricsApp({ registry, namePrefix: 'second_' })
  })

  test('a failed registration leaves the given registry as it was', async () => {
    const registry = new Registry()
    new Counter({ name: 'pg_pool_leaks_total', help: 'The app’s own, by accident', registers: [registry] })
    await expect(metricsApp({ registry })).rejects.toMatchObject({
      code: 'FST_PG_POOL_METRICS_DUPLICATE',
      message: expect.stringContaining('pg_pool_leaks_total'),
    })
    expect(registry.getMetricsAsArray().map((metric) => metric.name)).toEqual(['pg_pool_leaks_total'])
  })

  test('httpMetrics: false leaves HTTP durations to another plugin', async () => {
    const app = await metricsApp({ httpMetrics: false })
    await app.inject({ url: '/item' })
    const m = parseExposition((await app.inject({ url: '/metrics' })).body)
    expect(m.types.has('pg_pool_http_request_duration_seconds')).toBe(false)
    expect(m.value('pg_pool_acquires_total', { result: 'ok' })).toBe(1)
  })

  test('defaultMetrics: true adds the Node process metrics under their standard names', async () => {
    const plain = parseExposition((await (await metricsApp()).inject({ url: '/metrics' })).body)
    expect(plain.types.has('process_cpu_seconds_total')).toBe(false)
    const app = await metricsApp({ defaultMetrics: true })
    const m = parseExposition((await app.inject({ url: '/metrics' })).body)
    expect(m.types.get('process_cpu_seconds_total')).toBe('counter')
    expect(m.types.get('nodejs_heap_size_used_bytes')).toBe('gauge')
  })

  test('buckets replace the defaults per histogram', async () => {
    const app = await metricsApp({ buckets: { acquire: [0.05, 0.5], http: [1] } })
    await app.inject({ url: '/item' })
    const m = parseExposition((await app.inject({ url: '/metrics' })).body)
    expect(m.find('pg_pool_acquire_seconds_bucket').map((s) => s.labels.le)).toEqual(['0.05', '0.5', '+Inf'])
    expect(m.find('pg_pool_http_request_duration_seconds_bucket').map((s) => s.labels.le)).toEqual(['1', '+Inf'])
    expect(m.find('pg_pool_connect_seconds_bucket').length).toBe(12)
  })

  test('maxRoutes bounds the route label: later routes share "other"', async () => {
    const { app } = await coreApp(db.url, { max: 2 })
    apps.push(app)
    await app.register(pgPoolMetrics, { maxRoutes: 2 })
    for (const name of ['a', 'b', 'c', 'd']) app.get(`/${name}/:id`, async (request) => request.db`select 1`)
    for (const name of ['a', 'b', 'c', 'd', 'a']) expect((await app.inject({ url: `/${name}/1` })).statusCode).toBe(200)
    const m = parseExposition((await app.inject({ url: '/metrics' })).body)
    const routes = (name: string) => [...new Set(m.find(name).map((s) => s.labels.route))].sort()
    expect(routes('pg_pool_lease_seconds_count')).toEqual(['/a/:id', '/b/:id', 'other'])
    expect(m.value('pg_pool_lease_seconds_count', { route: 'other' })).toBe(2)
    expect(routes('pg_pool_http_request_duration_seconds_count')).toEqual(['/a/:id', '/b/:id', 'other'])
  })

  test.each([
    [{ namePrefix: 'bad-prefix' }, 'namePrefix'],
    [{ prefix: 'shop_' }, 'prefix'],
    [{ path: 'metrics' }, 'path'],
    [{ path: true }, 'path'],
    [{ registry: {} }, 'registry'],
    [{ registry: openMetricsRegistry() }, 'registry'],
    [{ httpMetrics: 'yes' }, 'httpMetrics'],
    [{ defaultMetrics: 1 }, 'defaultMetrics'],
    [{ maxRoutes: 0 }, 'maxRoutes'],
    [{ buckets: { acquire: [0.5, 0.1] } }, 'buckets.acquire'],
    [{ buckets: { wait: [1] } }, 'buckets.wait: unknown option; expected one of acquire, lease, connect, http'],
    [{ onRequest: 'token' }, 'onRequest'],
    [{ prefx: '/x' }, 'prefx: unknown option; did you mean prefix?'],
    [{ namePrefx: 'x_' }, 'namePrefx: unknown option; did you mean namePrefix?'],
    [{ buckets: { lease: [1], conect: [1] } }, 'buckets.conect: unknown option; did you mean connect?'],
    [{ default_metrics: true }, 'default_metrics: unknown option; did you mean defaultMetrics?'],
  ])('invalid option %j fails at register naming %s', async (options, name) => {
    const { app } = await coreApp(db.url, { max: 1 })
    apps.push(app)
    await expect(app.register(pgPoolMetrics, options as PgPoolMetricsOptions)).rejects.toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining(`Invalid option metrics.${name.includes(':') ? name : `${name}:`}`),
    })
  })
})

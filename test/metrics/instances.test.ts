import pgPoolCore, { channels } from '@fastify-pg-pool/core'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../support/database.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { parseExposition } from './exposition.js'

declare module '@fastify-pg-pool/core' {
  interface PgPoolInstances {
    reporting: true
  }
}

// Named instances (issue 19): every pool metric carries pool="<view.name>", one series set per
// pool, for pools registered before and after the metrics plugin.

let main: TestDatabase
let reporting: TestDatabase
let reportingProxy: TcpProxy
let app: FastifyInstance | undefined

beforeAll(async () => {
  main = await createTestDatabase()
  reporting = await createTestDatabase()
  const target = new URL(reporting.directUrl)
  reportingProxy = await startTcpProxy(Number(target.port), target.hostname)
})
afterEach(async () => {
  await app?.close()
  app = undefined
  reportingProxy.setMode('pass')
})
afterAll(async () => {
  await reportingProxy.close()
  await main.drop()
  await reporting.drop()
})

async function twoInstances(metricsFirst: boolean): Promise<FastifyInstance> {
  const instance = Fastify()
  const name = uniqueName('metrics')
  await instance.register(pgPoolCore, {
    connection: main.directUrl,
    pool: { max: 2, pgbouncer: false, applicationName: name },
  })
  const named = () =>
    instance.register(pgPoolCore, {
      name: 'reporting',
      connection: reportingProxy.urlFor(reporting.directUrl),
      pool: { max: 3, pgbouncer: false, applicationName: `${name}-r`, connectTimeout: 1_000, acquireTimeout: 1_000 },
    })
  if (!metricsFirst) await named()
  await instance.register(pgPoolMetrics)
  if (metricsFirst) await named()
  instance.get('/main', async (request) => (await request.db`select 1 as one`)[0])
  instance.get('/reporting', async (request) => (await request.dbs.reporting`select 1 as one`)[0])
  instance.get('/both', async (request) => {
    await request.db`select 1`
    await request.dbs.reporting`select 1`
    return 'ok'
  })
  await instance.ready()
  return instance
}

const scrape = async (instance: FastifyInstance) => parseExposition((await instance.inject('/metrics')).body)

describe('metrics of two instances', () => {
  for (const metricsFirst of [false, true]) {
    test(`every pool metric is labelled with its pool, counted apart (${metricsFirst ? 'named instance registered after the plugin' : 'both before'})`, async () => {
      app = await twoInstances(metricsFirst)
      const current = app
      for (let i = 0; i < 3; i++) expect((await current.inject('/main')).statusCode).toBe(200)
      for (let i = 0; i < 5; i++) expect((await current.inject('/reporting')).statusCode).toBe(200)
      expect((await current.inject('/both')).statusCode).toBe(200)
      await waitUntil(() => current.pgPools.all().every((view) => view.stats().leased === 0), 'every lease back')

      const m = await scrape(current)
      expect(m.value('pg_pool_connections_max', { pool: 'primary' })).toBe(2)
      expect(m.value('pg_pool_connections_max', { pool: 'reporting' })).toBe(3)
      // Every sample of every pool metric has a pool label, one of the two.
      const poolSamples = m.samples.filter((s) => s.name.startsWith('pg_pool_') && !s.name.includes('http_request'))
      expect(new Set(poolSamples.map((s) => s.labels.pool))).toEqual(new Set(['primary', 'reporting']))

      // The requests' leases (an instance joins the registry after its start-up check).
      const acquired = (pool: string) => m.value('pg_pool_acquires_total', { pool, result: 'ok' })
      expect(acquired('primary')).toBe(4)
      expect(acquired('reporting')).toBe(6)
      expect(m.value('pg_pool_lease_seconds_count', { pool: 'primary', route: '/main' })).toBe(3)
      expect(m.value('pg_pool_lease_seconds_count', { pool: 'reporting', route: '/reporting' })).toBe(5)
      expect(m.value('pg_pool_lease_seconds_count', { pool: 'reporting', route: '/both' })).toBe(1)
      expect(m.find('pg_pool_lease_seconds_count', { pool: 'primary', route: '/reporting' })).toEqual([])
      expect(m.value('pg_pool_acquire_seconds_count', { pool: 'reporting' })).toBe(acquired('reporting'))

      // Gauges read each pool's stats() at scrape.
      for (const view of current.pgPools.all()) {
        const stats = view.stats()
        expect(m.value('pg_pool_connections', { pool: view.name, state: 'idle' })).toBe(stats.idle)
        expect(m.value('pg_pool_connections', { pool: view.name, state: 'leased' })).toBe(0)
        // opened - closed = open, per pool.
        const closed = m.find('pg_pool_connections_closed_total', { pool: view.name }).reduce((n, s) => n + s.value, 0)
        expect(m.value('pg_pool_connections_opened_total', { pool: view.name }) - closed).toBe(stats.open)
      }
    })
  }

  test('a pool that cannot connect is counted on its own label; refusals are counted per pool', async () => {
    app = await twoInstances(false)
    const current = app
    reportingProxy.setMode('reset')
    // Its idle connection is cut: the next request finds none and cannot open one.
    await waitUntil(() => current.pgPools.get('reporting')?.stats().open === 0, 'the reporting pool emptied', 5_000)
    expect((await current.inject('/reporting')).statusCode).toBe(503)
    expect((await current.inject('/main')).statusCode).toBe(200)
    const reportingView = current.pgPools.get('reporting')
    if (reportingView === undefined) throw new Error('no reporting pool')
    channels.refusal.publish({ pool: reportingView, route: '/reporting', reason: 'queue_full', request: undefined })
    const m = await scrape(current)
    expect(m.value('pg_pool_connection_errors_total', { pool: 'reporting' })).toBeGreaterThanOrEqual(1)
    expect(m.value('pg_pool_connection_errors_total', { pool: 'primary' })).toBe(0)
    expect(m.value('pg_pool_acquires_total', { pool: 'reporting', result: 'error' })).toBe(1)
    expect(m.value('pg_pool_acquires_total', { pool: 'primary', result: 'error' })).toBe(0)
    expect(m.value('pg_pool_requests_shed_total', { pool: 'reporting', reason: 'queue_full' })).toBe(1)
    expect(m.value('pg_pool_requests_shed_total', { pool: 'primary', reason: 'queue_full' })).toBe(0)
  })
})

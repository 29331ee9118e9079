import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth, { type PgPoolHealthOptions } from '@fastify-pg-pool/health'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'
import { listen } from '../support/http.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { type Probe, probe } from './support.js'

declare module '@fastify-pg-pool/core' {
  interface PgPoolInstances {
    reporting: true
  }
}

// Named instances (issue 19): readiness covers every pool, one entry per pool under each key;
// only the default instance's primary fails it, another instance's failure warns.

let main: TestDatabase
let reporting: TestDatabase
let mainProxy: TcpProxy
let reportingProxy: TcpProxy
let app: FastifyInstance | undefined

const proxyFor = (db: TestDatabase) => startTcpProxy(Number(new URL(db.directUrl).port), new URL(db.directUrl).hostname)

beforeAll(async () => {
  main = await createTestDatabase()
  reporting = await createTestDatabase()
  mainProxy = await proxyFor(main)
  reportingProxy = await proxyFor(reporting)
})
afterEach(async () => {
  await app?.close()
  app = undefined
  mainProxy.setMode('pass')
  reportingProxy.setMode('pass')
})
afterAll(async () => {
  await mainProxy.close()
  await reportingProxy.close()
  await main.drop()
  await reporting.drop()
})

/** Both databases, each behind its proxy (so that either can be cut), directly (not via PgBouncer). */
async function twoInstances(health: PgPoolHealthOptions, healthFirst = false): Promise<FastifyInstance> {
  const instance = Fastify()
  const name = uniqueName('health')
  await instance.register(pgPoolCore, {
    connection: mainProxy.urlFor(main.directUrl),
    pool: { max: 2, pgbouncer: false, applicationName: name, connectTimeout: 1_000 },
  })
  const named = () =>
    instance.register(pgPoolCore, {
      name: 'reporting',
      connection: reportingProxy.urlFor(reporting.directUrl),
      pool: { max: 3, pgbouncer: false, applicationName: `${name}-r`, connectTimeout: 1_000 },
    })
  // The umbrella registered again with a name registers only the core: after health, then.
  if (!healthFirst) await named()
  await instance.register(pgPoolHealth, { cacheTime: 0, pingTimeout: 500, ...health })
  if (healthFirst) await named()
  return instance
}

const ids = (p: Probe, key: 'postgres:responseTime' | 'postgres:connections') =>
  (p.body.checks?.[key] ?? []).map((check) => [check.componentId, check.status])

describe('readiness with two instances', () => {
  test('lists both pools; another instance failing warns, the default primary failing fails', async () => {
    app = await twoInstances({})
    const base = await listen(app)

    const up = await probe(base, '/health/ready')
    expect(up.status).toBe(200)
    expect(up.body.status).toBe('pass')
    expect(ids(up, 'postgres:responseTime')).toEqual([
      ['primary', 'pass'],
      ['reporting', 'pass'],
    ])
    expect(up.body.checks?.['postgres:connections']?.map((check) => [check.componentId, check.max])).toEqual([
      ['primary', 2],
      ['reporting', 3],
    ])

    reportingProxy.setMode('reset')
    const degraded = await probe(base, '/health/ready')
    expect(degraded.status).toBe(200)
    expect(degraded.body.status).toBe('warn')
    expect(ids(degraded, 'postgres:responseTime')).toEqual([
      ['primary', 'pass'],
      ['reporting', 'fail'],
    ])
    expect(degraded.body.output).toBe('reporting: database unreachable (FST_PG_POOL_CONNECT_FAILED)')
    reportingProxy.setMode('pass')

    mainProxy.setMode('blackhole')
    const down = await probe(base, '/health/ready')
    expect(down.status).toBe(503)
    expect(down.body.status).toBe('fail')
    expect(ids(down, 'postgres:responseTime')).toEqual([
      ['primary', 'fail'],
      ['reporting', 'pass'],
    ])
    expect(down.body.output).toBe('primary: database did not answer within 500 ms (FST_PG_POOL_QUERY_TIMEOUT)')
    expect((await probe(base, '/health')).status).toBe(503)
    expect((await probe(base, '/health/live')).status).toBe(200)

    mainProxy.setMode('pass')
    const back = await probe(base, '/health/ready')
    expect(back.status).toBe(200)
    expect(back.body.status).toBe('pass')
  })

  test('a named instance registered after health is covered; requireInstances makes its failure fail', async () => {
    app = await twoInstances({ requireInstances: ['reporting'] }, true)
    const base = await listen(app)
    const up = await probe(base, '/health/ready')
    expect(ids(up, 'postgres:connections')).toEqual([
      ['primary', 'pass'],
      ['reporting', 'pass'],
    ])
    reportingProxy.setMode('reset')
    const down = await probe(base, '/health/ready')
    expect(down.status).toBe(503)
    expect(down.body.output).toBe('reporting: database unreachable (FST_PG_POOL_CONNECT_FAILED)')
  })

  test("details: 'public' still shows only the status; bodies name pools, never hosts", async () => {
    app = await twoInstances({ details: 'public' })
    const base = await listen(app)
    reportingProxy.setMode('reset')
    const degraded = await probe(base, '/health/ready')
    expect(degraded.body).toEqual({ status: 'warn' })
    reportingProxy.setMode('pass')
    await app.close()
    app = await twoInstances({})
    const full = await fetch(`${await listen(app)}/health/ready`)
    const text = await full.text()
    for (const secret of [String(mainProxy.port), String(reportingProxy.port), '127.0.0.1', main.password]) {
      if (secret !== '') expect(text).not.toContain(secret)
    }
  })

  test('invalid requireInstances is refused at register', async () => {
    const instance = Fastify()
    await instance.register(pgPoolCore, { connection: main.directUrl, pool: { lazy: true } })
    await expect(instance.register(pgPoolHealth, { requireInstances: 'reporting' as never })).rejects.toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining('health.requireInstances'),
    })
    await instance.close()
  })
})

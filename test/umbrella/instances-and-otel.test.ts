import { context, trace } from '@opentelemetry/api'
import Fastify, { type FastifyInstance } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../otel/sdk.js'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

// The umbrella registered twice (a second database under a name) and its `otel` option.

declare module '@fastify-pg-pool/core' {
  interface PgPoolInstances {
    analytics: true
  }
}

let primary: TestDatabase
let analytics: TestDatabase
let sdk: TestSdk
let app: FastifyInstance | undefined
beforeAll(async () => {
  primary = await createTestDatabase()
  analytics = await createTestDatabase()
  sdk = startTestSdk({ global: true })
})
afterEach(async () => {
  await app?.close()
  app = undefined
  sdk.reset()
})
afterAll(async () => {
  await sdk.shutdown()
  await primary.drop()
  await analytics.drop()
})

const pool = (db: TestDatabase) => ({ max: 2, pgbouncer: db.viaBouncer })
const nameOf = (db: TestDatabase) => new URL(db.directUrl).pathname.slice(1)

describe('the umbrella registered twice', () => {
  test('a named second registration adds a database; health, metrics and admission control are registered once and serve both', async () => {
    app = Fastify()
    await app.register(pgPool, { connection: primary.url, pool: pool(primary) })
    await app.register(pgPool, { name: 'analytics', connection: analytics.url, pool: pool(analytics) })
    app.get('/both', async (request) => {
      const [a] = await request.db<{ db: string }[]>`select current_database() as db`
      const [b] = await request.dbs.analytics<{ db: string }[]>`select current_database() as db`
      return { primary: a?.db, analytics: b?.db }
    })
    const both = await app.inject('/both')
    expect(both.statusCode).toBe(200)
    expect(both.json()).toEqual({ primary: nameOf(primary), analytics: nameOf(analytics) })

    const health = await app.inject('/health')
    expect(health.statusCode).toBe(200)
    const entries = Object.values(health.json().checks as Record<string, { componentId: string }[]>).flat()
    expect(new Set(entries.map((entry) => entry.componentId))).toEqual(new Set(['primary', 'analytics']))
    const metrics = (await app.inject('/metrics')).body
    expect(metrics).toMatch(/pg_pool_connections_max\{[^}]*pool="analytics"[^}]*\} 2/)
  })

  test('options for a shared part on the second registration are refused: they would be ignored', async () => {
    app = Fastify()
    await app.register(pgPool, { connection: primary.url, pool: pool(primary) })
    app.register(pgPool, { name: 'analytics', connection: analytics.url, health: { prefix: '/analytics' } })
    await expect(app.ready()).rejects.toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining('health'),
    })
  })

  test('the first registration decides: health: false there means no health routes after a named one either', async () => {
    app = Fastify()
    await app.register(pgPool, { connection: primary.url, pool: pool(primary), health: false, metrics: false })
    await app.register(pgPool, { name: 'analytics', connection: analytics.url, pool: pool(analytics) })
    await app.ready()
    expect(app.hasRoute({ method: 'GET', url: '/health' })).toBe(false)
    expect(app.hasRoute({ method: 'GET', url: '/metrics' })).toBe(false)
  })

  test('admission control comes with the default registration: backpressure options on a named registration are refused', async () => {
    app = Fastify()
    app.register(pgPool, { name: 'analytics', connection: analytics.url, backpressure: { maxDelay: 50 } })
    await expect(app.ready()).rejects.toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining('backpressure'),
    })
  })
})

describe('otel', () => {
  test('otel: {} traces leases and statements through the registered SDK', async () => {
    app = Fastify()
    await app.register(pgPool, { connection: primary.url, pool: pool(primary), otel: {} })
    app.get('/one', async (request) => {
      const [row] = await request.db<{ n: number }[]>`select 1 as n`
      return row
    })
    expect((await app.inject('/one')).statusCode).toBe(200)
    const statement = sdk.spans().find((span) => span.attributes['db.system.name'] === 'postgresql')
    expect(statement?.attributes['db.namespace']).toBe(nameOf(primary))
  })

  test("otel: { traceContext: true } shows the trace's traceparent and the route in the session's application_name", async () => {
    app = Fastify()
    const applicationName = uniqueName()
    await app.register(pgPool, {
      connection: primary.url,
      pool: { ...pool(primary), applicationName },
      otel: { traceContext: true },
    })
    app.get('/name', async (request) => {
      const [row] = await request.db<{ name: string }[]>`select current_setting('application_name') as name`
      return row
    })
    const tracer = trace.getTracer('test')
    const span = tracer.startSpan('request')
    // inject() starts when then() is called: inside the span's context.
    const response = await context.with(trace.setSpan(context.active(), span), () =>
      (app as FastifyInstance).inject('/name').then((reply) => reply),
    )
    span.end()
    const { traceId, spanId } = span.spanContext()
    expect(response.json().name).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01 /name$`))
    expect(response.json().name).not.toContain(spanId.repeat(2))
    // Without a trace, the pool's own name.
    expect((await app.inject('/name')).json().name).toBe(applicationName)
  })

  test('traceContext applies to a named instance registered after; refused behind PgBouncer', async () => {
    app = Fastify()
    await app.register(pgPool, { connection: primary.url, pool: pool(primary), otel: { traceContext: true } })
    await app.register(pgPool, { name: 'analytics', connection: analytics.url, pool: pool(analytics) })
    app.get('/an', async (request) => {
      const [row] = await request.dbs.analytics<{ name: string }[]>`select current_setting('application_name') as name`
      return row
    })
    const span = trace.getTracer('test').startSpan('request')
    const response = await context.with(trace.setSpan(context.active(), span), () =>
      (app as FastifyInstance).inject('/an').then((reply) => reply),
    )
    span.end()
    expect(response.json().name).toMatch(new RegExp(`^00-${span.spanContext().traceId}-[0-9a-f]{16}-01 /an$`))

    const behindBouncer = Fastify()
    behindBouncer.register(pgPool, { connection: primary.url, pool: { pgbouncer: true }, otel: { traceContext: true } })
    await expect(behindBouncer.ready()).rejects.toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining('PgBouncer'),
    })
    await behindBouncer.close()
  })

  test('otel options are checked: a typo, and traceContext not a boolean', async () => {
    for (const [otel, key] of [
      [{ tracecontext: true }, 'otel.tracecontext'],
      [{ traceContext: 'yes' }, 'otel.traceContext'],
    ] as const) {
      const instance = Fastify()
      instance.register(pgPool, { connection: primary.url, otel: otel as never })
      await expect(instance.ready()).rejects.toMatchObject({
        code: 'FST_PG_POOL_INVALID_OPTION',
        message: expect.stringContaining(key),
      })
      await instance.close()
    }
  })
})

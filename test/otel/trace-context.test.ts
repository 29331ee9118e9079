import {
  APPLICATION_NAME_BYTES,
  applicationNameFormats,
  traceContextApplicationName,
  traceContextOnLease,
  traceparentOf,
} from '@fastify-pg-pool/otel'
import { context, ROOT_CONTEXT, TraceFlags, trace } from '@opentelemetry/api'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { closeGate, createTables, type OtelApp, otelApp } from './helpers.js'
import { startTestSdk, type TestSdk } from './sdk.js'

let db: TestDatabase
let sdk: TestSdk
const apps: OtelApp[] = []
beforeAll(async () => {
  db = await createTestDatabase()
  await createTables(db)
  sdk = startTestSdk({ global: true })
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map(({ app }) => app.close()))
  sdk.reset()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

async function start(options: Parameters<typeof otelApp>[1] = {}): Promise<OtelApp> {
  const started = await otelApp(db.url, { fastifyOtel: sdk.tracerProvider, onLease: traceContextOnLease(), ...options })
  apps.push(started)
  return started
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/

describe('trace context to the server: application_name per lease', () => {
  test('pg_stat_activity shows the traceparent and the route of a running statement', async () => {
    const { app, applicationName } = await start({ pool: { max: 1 } })
    const gate = await closeGate(db)
    const request = app.inject('/gate')
    const running = async () =>
      db.admin<{ application_name: string }[]>`
        select application_name from pg_stat_activity
        where state = 'active' and query like '%from gate' and pid <> pg_backend_pid()
          and datname = ${new URL(db.directUrl).pathname.slice(1)}`
    await waitUntil(async () => (await running()).length === 1, 'the gate statement to run')
    const [row] = await running()
    await gate.open()
    expect((await request).statusCode).toBe(200)

    const [traceparent, route] = (row?.application_name ?? '').split(' ')
    expect(route).toBe('/gate')
    const match = TRACEPARENT.exec(traceparent ?? '')
    expect(match, row?.application_name).not.toBeNull()
    // The trace of the request, and the span the lease was taken under (the handler's).
    const spans = sdk.spans()
    const statement = spans.find((s) => s.name === 'select gate') as ReadableSpan
    expect(match?.[1]).toBe(statement.spanContext().traceId)
    expect(match?.[2]).toBe(statement.parentSpanContext?.spanId)
    // The connection is the pool's again once the request is over (the reset restores it).
    await waitUntil(
      async () => (await db.countConnections(applicationName)) === app.pgPool.stats().open,
      'the name back',
    )
  })

  test('one prepared statement for every traced lease: the text is fixed, the name a parameter', async () => {
    const { app } = await start({ pool: { max: 1 } })
    const counts: number[] = []
    for (let i = 0; i < 6; i++) counts.push((await app.inject('/prepared')).json().n)
    // Each traced request had its own traceparent, yet after the first request nothing new is prepared.
    expect(new Set(counts.slice(1)).size).toBe(1)
  })

  test('the server keeps 63 bytes of the name: a long route is cut, the traceparent never', async () => {
    const { app } = await start()
    const route = '/the/names/this/connection/has/while/it/runs/:id'
    const { setting, activity } = (await app.inject('/the/names/this/connection/has/while/it/runs/1')).json()
    // Cut when set: the setting (hence the server log's %a) and pg_stat_activity agree.
    expect(activity).toBe(setting)
    expect(Buffer.byteLength(setting)).toBe(APPLICATION_NAME_BYTES)
    const [traceparent, routeStart] = setting.split(' ')
    expect(TRACEPARENT.test(traceparent)).toBe(true)
    expect(route.startsWith(routeStart)).toBe(true)
    expect(routeStart).toBe('/the/na')
  })

  test('the route format: the route whole up to 30 bytes, then the trace id', async () => {
    const { app } = await start({ onLease: traceContextOnLease({ format: applicationNameFormats.route }) })
    const { setting } = (await app.inject('/the/names/this/connection/has/while/it/runs/1')).json()
    const statement = sdk.spans().find((s) => s.name === 'select') as ReadableSpan
    expect(setting).toBe(`/the/names/this/connection/has ${statement.spanContext().traceId}`)
    expect(Buffer.byteLength(setting)).toBeLessThanOrEqual(APPLICATION_NAME_BYTES)
    const short = applicationNameFormats.route('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', '/items/:id')
    expect(short).toBe('/items/:id 4bf92f3577b34da6a3ce929d0e0e4736')
    // Written as PostgreSQL 16+ stores it (any byte outside printable ASCII as \xNN), cut at 30 of
    // those bytes between whole characters: the server's cut can no longer reach the trace id.
    const wide = applicationNameFormats.route(
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      '/größe\t/ä/:id',
    )
    expect(wide).toBe('/gr\\xc3\\xb6\\xc3\\x9fe\\x09/ 4bf92f3577b34da6a3ce929d0e0e4736')
    expect(applicationNameFormats.traceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', '/ä')).toBe(
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 /\\xc3\\xa4',
    )
  })

  test('a lease with no trace active leaves application_name alone (no statement sent)', async () => {
    const { app, applicationName } = await start({ fastifyOtel: undefined, pool: { max: 1 } })
    const gate = await closeGate(db)
    const request = app.inject('/gate')
    await waitUntil(async () => (await db.running(applicationName, '%from gate%')) === 1, 'the gate statement to run')
    await gate.open()
    expect((await request).statusCode).toBe(200)
    expect(sdk.spans().filter((s) => s.name === 'select')).toEqual([])
  })
})

describe('traceparentOf and traceContextApplicationName', () => {
  test('W3C traceparent of the active span; undefined without one', () => {
    expect(traceparentOf(ROOT_CONTEXT)).toBeUndefined()
    const spanContext = {
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      traceFlags: TraceFlags.SAMPLED,
    }
    const ctx = trace.setSpanContext(ROOT_CONTEXT, spanContext)
    expect(traceparentOf(ctx)).toBe('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')
    expect(traceparentOf(trace.setSpanContext(ROOT_CONTEXT, { ...spanContext, traceFlags: TraceFlags.NONE }))).toBe(
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00',
    )
    expect(traceContextApplicationName('/items/:id', ctx)).toBe(
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 /items/:id',
    )
    expect(traceContextApplicationName('/x', ctx, (tp, route) => `${route}|${tp.slice(3, 35)}`)).toBe(
      '/x|4bf92f3577b34da6a3ce929d0e0e4736',
    )
    expect(context.with(ctx, () => traceContextApplicationName('/y'))).toMatch(/^00-4bf9.* \/y$/)
  })
})

// Round eleven of hostile probing, fixed (found by the OpenTelemetry probe): the README's "Trace context to the server" setup (the core's
// `leaseApplicationName: (_r, route) => traceContextApplicationName(route)` with @fastify/otel,
// and no pgPoolOtel plugin registered, exactly as the README's snippet shows it) labels the
// session of a request that WAITED for its connection with the traceparent of the request that
// released the connection. pg_stat_activity then points at the wrong trace, which is the one
// thing the feature is for ("To see in pg_stat_activity which trace and route a running statement
// belongs to").
// With the pgPoolOtel plugin registered the label is right (control test): its channel
// subscriptions make the pool snapshot the waiter's async context.
// Cause: pool.ts:264 takes the waiter's AsyncLocalStorage snapshot (holder.resume) only while
// queryStart/acquireEnd have subscribers; otherwise #give (pool.ts:577-581) runs
// waiter.acquired() -> Lease.#attach (lease.ts:503-507), which calls leaseApplicationName, in the
// releasing request's context. The same holds for traceContextOnLease() (onLease runs there too).
import { FastifyOtelInstrumentation } from '@fastify/otel'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel, { traceContextApplicationName, traceContextOnLease } from '@fastify-pg-pool/otel'
import { trace } from '@opentelemetry/api'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../../support/database.js'
import { closeGate, createTables } from '../helpers.js'
import { startTestSdk, type TestSdk } from '../sdk.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  await createTables(db)
  sdk = startTestSdk({ global: true })
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

async function waiterLabel(how: 'leaseApplicationName' | 'onLease', withPlugin: boolean) {
  sdk.reset()
  const app = Fastify()
  const instrumentation = new FastifyOtelInstrumentation()
  instrumentation.setTracerProvider(sdk.tracerProvider)
  await app.register(instrumentation.plugin())
  await app.register(pgPoolCore, {
    connection: db.url,
    pool: { max: 1, applicationName: uniqueName('tc') },
    ...(how === 'leaseApplicationName'
      ? { leaseApplicationName: (_request: unknown, route: string) => traceContextApplicationName(route) }
      : { onLease: traceContextOnLease() }),
  })
  if (withPlugin) await app.register(pgPoolOtel)
  app.get('/gate', async (request) => (await request.db`select count(*)::int as n from gate`)[0])
  app.get('/name', async (request) => {
    const [row] = await request.db<{ name: string }[]>`
      select (select application_name from pg_stat_activity where pid = pg_backend_pid()) as name`
    return { name: row?.name, own: trace.getActiveSpan()?.spanContext().traceId }
  })
  await app.ready()
  try {
    const gate = await closeGate(db)
    const holder = app.inject('/gate')
    await waitUntil(() => app.pgPool.stats().leased === 1, '/gate to hold the one connection')
    const waiter = app.inject('/name')
    await waitUntil(() => app.pgPool.stats().waiting === 1, '/name to wait')
    await gate.open()
    expect((await holder).statusCode).toBe(200)
    const response = await waiter
    expect(response.statusCode).toBe(200)
    const body = response.json() as { name: string; own: string }
    const gateTrace = sdk
      .spans()
      .find((s) => s.attributes['fastify.root'] === '@fastify/otel' && s.attributes['http.route'] === '/gate')
      ?.spanContext().traceId
    return { labelTrace: /^00-([0-9a-f]{32})-/.exec(body.name)?.[1], own: body.own, gateTrace }
  } finally {
    await app.close()
  }
}

for (const how of ['leaseApplicationName', 'onLease'] as const) {
  test(`${how}, no pgPoolOtel plugin (the README's setup): a waiter's application_name carries its own trace`, async () => {
    const { labelTrace, own, gateTrace } = await waiterLabel(how, false)
    expect(own).toMatch(/^[0-9a-f]{32}$/)
    expect({ labelTrace, isTheReleasersTrace: labelTrace === gateTrace }).toEqual({
      labelTrace: own,
      isTheReleasersTrace: false,
    })
  })
}

test('control: with the pgPoolOtel plugin registered the waiter’s label is its own trace', async () => {
  const { labelTrace, own } = await waiterLabel('leaseApplicationName', true)
  expect(labelTrace).toBe(own)
})

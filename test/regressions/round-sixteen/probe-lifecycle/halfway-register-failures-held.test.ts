// Round sixteen (life-cycle probe), held: registration failing half-way, after earlier plugins
// opened pools, a replica monitor, a LISTEN connection, under-pressure's sampler and otel's
// channel subscriptions: a user plugin that throws after app.db.listen(), a named instance whose
// database does not exist, otel's poolName throwing for a later instance (and for the first),
// an invalid backpressure option (after core, metrics and health registered), a metric name
// taken in an injected registry. Each app is built, fails ready(), and is closed, twelve times
// per mode in one process (a test suite). Expected and observed: ready() rejects, close() settles,
// no backend of the app is left, no process listener, diagnostics_channel subscriber, timer or
// closed app accumulates.
import { channel } from 'node:diagnostics_channel'
import { channelNames } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { Counter, Registry } from 'prom-client'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../../../support/database.js'
import { collectGarbage, liveObjects, processListeners, Timeout } from '../../../support/growth-kit.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  sdk = startTestSdk()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

const base = (name: string) => ({
  connection: db.directUrl,
  replicas: [db.directUrl],
  pool: { max: 2, applicationName: name },
  otel: { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider },
})
const missingDatabase = () => {
  const url = new URL(db.directUrl)
  url.pathname = '/no_such_database_halfway'
  return url.toString()
}

const modes: Record<string, (app: FastifyInstance, name: string) => void> = {
  'a user plugin throws after app.db.listen()': (app, name) => {
    app.register(pgPool, base(name))
    app.register(async (child) => {
      await child.db.listen('halfway', () => {})
      throw new Error('a later plugin failed')
    })
  },
  "a named instance's database does not exist": (app, name) => {
    app.register(pgPool, base(name))
    app.register(pgPool, {
      name: 'reports',
      connection: missingDatabase(),
      pool: { max: 1, applicationName: `${name}-r`, connectTimeout: 2_000 },
    })
  },
  "otel's poolName throws for a named instance": (app, name) => {
    let calls = 0
    const poolName = (view: { name: string }) => {
      if (calls++ > 1) throw new Error('no name for it')
      return view.name
    }
    app.register(pgPool, { ...base(name), otel: { ...base(name).otel, poolName } })
    app.register(pgPool, { name: 'reports', connection: db.directUrl, pool: { max: 1, applicationName: `${name}-r` } })
  },
  "otel's poolName throws (registration refused)": (app, name) => {
    const poolName = () => {
      throw new Error('no name')
    }
    app.register(pgPool, { ...base(name), otel: { ...base(name).otel, poolName } })
  },
  'an invalid backpressure option': (app, name) => {
    app.register(pgPool, { ...base(name), backpressure: { target: -1 } })
  },
  'a metric name taken in the injected registry': (app, name) => {
    const registry = new Registry()
    new Counter({ name: 'pg_pool_connections', help: 'taken', registers: [registry] })
    app.register(pgPool, { ...base(name), metrics: { registry } })
  },
}

test.each(Object.keys(modes))('%s: twelve apps failed and closed, nothing left', { timeout: 120_000 }, async (mode) => {
  await collectGarbage()
  const before = { listeners: processListeners(), timers: liveObjects(Timeout) }
  const refs: WeakRef<FastifyInstance>[] = []
  for (let i = 0; i < 12; i++) {
    const name = uniqueName('hw')
    const app = Fastify()
    modes[mode]?.(app, name)
    // Not expect(...).rejects: vitest keeps what it asserted on, and with it the app.
    expect(
      await app.ready().then(
        () => 'ready',
        (error: unknown) => error instanceof Error,
      ),
    ).toBe(true)
    await app.close()
    refs.push(new WeakRef(app))
    expect(
      await waitFor(
        async () => (await db.countConnections(name)) + (await db.countConnections(`${name}/listen`)) === 0,
        10_000,
      ),
      `${mode}, app ${i}`,
    ).toBe(true)
  }
  await collectGarbage()
  expect(Object.values(channelNames).filter((name) => channel(name).hasSubscribers)).toEqual([])
  expect(processListeners()).toEqual(before.listeners)
  // Fewer than one per app, whatever their number: the first app of the process starts what stays
  // (six timers in a plain run), and postgres.js's origin cache keeps a first query's app
  // (test/core/long-run-growth.test.ts).
  expect(liveObjects(Timeout)).toBeLessThanOrEqual(before.timers + 8)
  expect(refs.filter((ref) => ref.deref() !== undefined).length).toBeLessThanOrEqual(2)
})

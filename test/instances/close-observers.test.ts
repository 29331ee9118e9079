// app.pgPools.onClosed and the observers (metrics, otel) at app.close(). Found by hostile probing
// (round 8, second round against 573887e); three failed before the fix: a core whose decoration
// threw after its pools started left a connection open and onClosed never fired (metrics stayed in
// an injected registry); a listener that threw kept the later ones from running and failed
// close(); a listener registered after close was never called. The rest held.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify from 'fastify'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'

let db: TestDatabase
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

const core = (name?: string, extra: Record<string, unknown> = {}) => ({
  ...(name === undefined ? {} : { name }),
  connection: db.url,
  pool: { max: 2, applicationName: uniqueName('close2'), pgbouncer: db.viaBouncer, closeTimeout: 500 },
  ...extra,
})

describe('onClosed with several instances', () => {
  test('named instances before and after metrics, in child contexts: metrics leave an injected registry, a second app takes them', async () => {
    const registry = new Registry()
    for (let round = 0; round < 2; round++) {
      const app = Fastify()
      await app.register(async (child) => {
        await child.register(pgPoolCore, core('first'))
      })
      await app.register(pgPoolCore, core())
      await app.register(pgPoolMetrics, { registry })
      await app.register(async (child) => {
        await child.register(pgPoolCore, core('late'))
      })
      app.get('/x', async (request) => {
        const dbs = request.dbs as Record<string, typeof request.db>
        await (dbs.late as typeof request.db)`select 1`
        await (dbs.first as typeof request.db)`select 1`
        return request.db`select 1 as one`
      })
      await app.ready()
      expect((await app.inject('/x')).statusCode).toBe(200)
      await app.close()
      expect(
        registry.getMetricsAsArray().map((m) => m.name),
        `round ${round}`,
      ).toEqual([])
    }
  })

  test('a named core registration with bad options after metrics: ready fails; close still empties the injected registry', async () => {
    const registry = new Registry()
    const app = Fastify()
    await app.register(pgPoolCore, core())
    await app.register(pgPoolMetrics, { registry })
    app.register(pgPoolCore, core('bad', { pool: { max: -1 } }))
    await expect(app.ready()).rejects.toThrow()
    await app.close()
    expect(registry.getMetricsAsArray().map((m) => m.name)).toEqual([])
    const again = Fastify()
    await again.register(pgPoolCore, core())
    await again.register(pgPoolMetrics, { registry })
    await again.ready()
    await again.close()
  })

  test('a core whose decorate fails after its pools started (app already has `db`): nothing left open, onClosed fires', async () => {
    const registry = new Registry()
    const applicationName = uniqueName('close2dec')
    const app = Fastify()
    await app.register(pgPoolCore, core('named'))
    await app.register(pgPoolMetrics, { registry })
    app.decorate('db', { mine: true } as never)
    app.register(pgPoolCore, {
      connection: db.url,
      pool: { max: 2, applicationName, pgbouncer: db.viaBouncer, closeTimeout: 500 },
    })
    const failure = await app.ready().then(
      () => undefined,
      (error: Error) => error,
    )
    expect(String(failure)).toMatch(/db/)
    await app.close()
    // Every connection of the failed registration is gone, and the observers let go.
    const gone = await waitFor(async () => (await db.countConnections(applicationName)) === 0, 3_000)
    const left = await db.countConnections(applicationName)
    // Clean up what the failed registration left (our own backends only).
    await db.terminate(applicationName)
    expect.soft({ connectionsLeft: gone ? 0 : left }).toEqual({ connectionsLeft: 0 })
    expect.soft(registry.getMetricsAsArray().length, 'metrics left in the injected registry').toBe(0)
  })

  test('a plugin that registers a named core in its own context then fails: close ends that pool, onClosed fires', async () => {
    const registry = new Registry()
    const applicationName = uniqueName('close2child')
    const app = Fastify()
    await app.register(pgPoolCore, core())
    await app.register(pgPoolMetrics, { registry })
    app.register(async (child) => {
      await child.register(pgPoolCore, {
        name: 'child',
        connection: db.url,
        pool: { max: 2, applicationName, pgbouncer: db.viaBouncer, closeTimeout: 500 },
      })
      throw new Error('the plugin failed after its instance')
    })
    await expect(app.ready()).rejects.toThrow('the plugin failed')
    await app.close()
    const gone = await waitFor(async () => (await db.countConnections(applicationName)) === 0, 3_000)
    const left = await db.countConnections(applicationName)
    await db.terminate(applicationName)
    expect.soft({ connectionsLeft: gone ? 0 : left }).toEqual({ connectionsLeft: 0 })
    expect.soft(registry.getMetricsAsArray().length, 'metrics left in the injected registry').toBe(0)
  })

  test('app.close() called twice and concurrently: onClosed listeners run exactly once', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, core())
    await app.register(pgPoolCore, core('two'))
    let calls = 0
    app.pgPools.onClosed(() => calls++)
    await app.ready()
    await Promise.all([app.close(), app.close()])
    await app.close()
    expect(calls).toBe(1)
  })

  test('a listener registered after close has ended is called (or at least the promise a user awaits settles)', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, core())
    await app.ready()
    await app.close()
    let called = false
    app.pgPools.onClosed(() => {
      called = true
    })
    await waitFor(() => called, 1_000)
    expect(called).toBe(true)
  })

  test('a listener that throws does not keep the later ones (metrics) from running, nor fail close', async () => {
    const registry = new Registry()
    const app = Fastify()
    await app.register(pgPoolCore, core())
    app.pgPools.onClosed(() => {
      throw new Error('user listener failed')
    })
    await app.register(pgPoolMetrics, { registry })
    await app.ready()
    const closed = await app.close().then(
      () => 'ok',
      (error: Error) => error.message,
    )
    expect({ closed, metrics: registry.getMetricsAsArray().map((m) => m.name) }).toEqual({ closed: 'ok', metrics: [] })
  })

  test('an onClose hook of the app that throws (registered after the core, so run first): pools still end, onClosed fires', async () => {
    const registry = new Registry()
    const applicationName = uniqueName('close2hook')
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: db.url,
      pool: { max: 2, applicationName, pgbouncer: db.viaBouncer, closeTimeout: 500 },
    })
    await app.register(pgPoolMetrics, { registry })
    app.addHook('onClose', async () => {
      throw new Error('app hook failed')
    })
    await app.ready()
    await app.db`select 1`
    await app.close().catch(() => {})
    expect(await waitFor(async () => (await db.countConnections(applicationName)) === 0, 3_000)).toBe(true)
    expect(registry.getMetricsAsArray().map((m) => m.name)).toEqual([])
  })
})

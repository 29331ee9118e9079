import { EventEmitter } from 'node:events'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { Gauge, register as globalRegistry, Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { parseExposition } from './exposition.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

describe('registering and closing', () => {
  test('two apps in one process, registered and closed 20 times: no errors, no growth', async () => {
    const shared = new Registry()
    new Gauge({ name: 'user_gauge', help: 'A metric of the app itself', registers: [shared] })
    const sharedBaseline = shared.getMetricsAsArray().map((m) => m.name)
    const sizes = new Set<number>()
    const errors: unknown[] = []

    for (let round = 0; round < 20; round++) {
      // A: a fresh registry of its own (the default). B: a registry that outlives it.
      const a = await coreApp(db.url, { max: 1 })
      const b = await coreApp(db.url, { max: 1 })
      try {
        await a.app.register(pgPoolMetrics)
        await b.app.register(pgPoolMetrics, { registry: shared, namePrefix: 'b_' })
        for (const { app } of [a, b]) {
          app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
          expect((await app.inject({ url: '/one' })).statusCode).toBe(200)
        }
        const ma = parseExposition((await a.app.inject({ url: '/metrics' })).body)
        const mb = parseExposition((await b.app.inject({ url: '/metrics' })).body)
        // Each app counts only its own work, every round.
        expect(ma.value('pg_pool_acquires_total', { result: 'ok' })).toBe(1)
        expect(mb.value('b_acquires_total', { result: 'ok' })).toBe(1)
        expect(ma.find('b_acquires_total')).toEqual([])
        sizes.add(a.app.pgPoolMetrics.registry.getMetricsAsArray().length)
        expect(a.app.pgPoolMetrics.registry).not.toBe(globalRegistry)
      } catch (error) {
        errors.push(error)
      } finally {
        await Promise.all([a.app.close(), b.app.close()])
      }
      expect(shared.getMetricsAsArray().map((m) => m.name)).toEqual(sharedBaseline)
    }

    expect(errors).toEqual([])
    expect(sizes.size).toBe(1)
    expect(globalRegistry.getMetricsAsArray()).toEqual([])
  })

  test('every listener the plugin adds to the pool view is removed on close', async () => {
    const { app } = await coreApp(db.url, { max: 1 })
    // The view is frozen: the listeners are seen on the pool's emitter, through EventEmitter's
    // own methods (the view's on/off forward to them).
    const live = new Map<string, Set<unknown>>()
    const on = vi.spyOn(EventEmitter.prototype, 'on')
    const off = vi.spyOn(EventEmitter.prototype, 'off')
    const viewEvents = new Set([
      'acquire',
      'acquireError',
      'close',
      'connect',
      'connectError',
      'leak',
      'readFallback',
      'release',
      'resetError',
      'transaction',
    ])
    try {
      await app.register(pgPoolMetrics)
      await app.ready()
      // The pool: the one emitter given an 'acquire' listener (sockets share other event names).
      const pool = on.mock.contexts[on.mock.calls.findIndex(([event]) => event === 'acquire')]
      on.mock.calls.forEach(([event, listener], i) => {
        if (on.mock.contexts[i] === pool && typeof event === 'string')
          live.set(event, (live.get(event) ?? new Set()).add(listener))
      })
      expect([...live.keys()].sort()).toEqual([...viewEvents].sort())
      expect([...live.values()].every((listeners) => listeners.size === 1)).toBe(true)
      await app.close()
      off.mock.calls.forEach(([event, listener], i) => {
        if (off.mock.contexts[i] === pool && typeof event === 'string') live.get(event)?.delete(listener)
      })
      expect([...live.values()].every((listeners) => listeners.size === 0)).toBe(true)
    } finally {
      on.mockRestore()
      off.mockRestore()
    }
  })
})

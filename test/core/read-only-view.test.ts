import type { PgPoolView } from '@fastify-pg-pool/core'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Issue 18 item 5: core publishes a read-only view. Observers (health, metrics, tracing, the
// app's own code) read app.pgPool and app.pgPools; none of them can change what the others see.

let db: TestDatabase
let current: TestApp

beforeAll(async () => {
  db = await createTestDatabase()
  current = await coreApp(db.url, { max: 2 })
  await current.app.ready()
})
afterAll(async () => {
  await current?.app.close()
  await db?.drop()
})

describe('the published view is read-only', () => {
  test('app.pgPool: its members cannot be replaced or added to', () => {
    const view = current.app.pgPool as unknown as Record<string, unknown>
    expect(() => {
      view.stats = () => ({ leased: 0 })
    }).toThrow(TypeError)
    expect(() => {
      view.extra = 1
    }).toThrow(TypeError)
    expect(current.app.pgPool.stats().max).toBe(2)
  })

  test('app.pgPools.all(): the list other observers read cannot be changed through it', () => {
    const views = current.app.pgPools.all() as PgPoolView[]
    const fake = { ...current.app.pgPool, name: 'fake' } as PgPoolView
    expect(() => views.push(fake)).toThrow(TypeError)
    expect(current.app.pgPools.all()).toHaveLength(1)
  })

  test('app.pgPools offers what observers read (all, get, onAdd), not the registration of instances', () => {
    const registry = current.app.pgPools as unknown as Record<string, unknown>
    expect(registry.add).toBeUndefined()
    expect(registry.instance).toBeUndefined()
    expect(registry.default).toBeUndefined()
    expect(typeof registry.all).toBe('function')
    expect(current.app.pgPools.get()).toBe(current.app.pgPool)
    expect(() => {
      registry.all = () => []
    }).toThrow(TypeError)
  })
})

describe('app.dbs: a named instance cannot be swapped', () => {
  test('assigning app.dbs.<name> throws and the instance stays', async () => {
    const { app } = await coreApp(db.url, { max: 1 }, {}, { name: 'reports' })
    try {
      await app.ready()
      const reports = app.dbs.reports
      expect(reports).toBeDefined()
      expect(() => {
        ;(app.dbs as Record<string, unknown>).reports = {}
      }).toThrow(TypeError)
      expect(app.dbs.reports).toBe(reports)
    } finally {
      await app.close()
    }
  })
})

describe("the observers' own views are frozen too", () => {
  test('app.pgPoolMetrics: its registry and scrape cannot be replaced', async () => {
    const { app } = await coreApp(db.url, { max: 1 })
    try {
      await app.register(pgPoolMetrics, { registry: new Registry() })
      await app.ready()
      const metrics = app.pgPoolMetrics as unknown as Record<string, unknown>
      expect(() => {
        metrics.scrape = async () => ''
      }).toThrow(TypeError)
      expect(Object.isFrozen(app.pgPool)).toBe(true)
    } finally {
      await app.close()
    }
  })
})

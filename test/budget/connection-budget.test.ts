import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { type EmbeddedServer, startEmbeddedServer } from '../support/embedded-server.js'

// A server of its own with a small max_connections (3 reserved for superusers).
let server: EmbeddedServer
beforeAll(async () => {
  server = await startEmbeddedServer({
    postgresFlags: ['-c', 'max_connections=20', '-c', 'superuser_reserved_connections=3'],
  })
})
afterAll(() => server.destroy())

describe('connection budget', () => {
  test('max x instances above max_connections minus reserved warns with the numbers', async () => {
    const { app, logs } = await coreApp(server.url, { max: 6, instances: 3 })
    try {
      const budget = app.pgPool.budget()
      expect(budget).toMatchObject({
        maxConnections: 20,
        reserved: 3,
        available: 17,
        instances: 3,
        demand: 18,
        exceeded: true,
      })
      expect(budget?.inUse).toBeGreaterThanOrEqual(1)
      const warning = logs.find((line) => line.level === 40 && String(line.msg).includes('max_connections'))
      expect(warning).toMatchObject({ demand: 18, available: 17, maxConnections: 20, instances: 3, max: 6 })
      expect(String(warning?.msg)).toContain('6 x 3 instances = 18 connections, more than the 17')
      expect(JSON.stringify(logs)).not.toContain(server.password)
    } finally {
      await app.close()
    }
  })

  test('a pool that fits does not warn; PG_POOL_INSTANCES sets the default', async () => {
    process.env.PG_POOL_INSTANCES = '2'
    try {
      const { app, logs } = await coreApp(server.url, { max: 8 })
      expect(app.pgPool.options.instances).toBe(2)
      expect(app.pgPool.budget()).toMatchObject({ demand: 16, available: 17, exceeded: false })
      expect(logs.filter((line) => String(line.msg).includes('max_connections'))).toEqual([])
      await app.close()
    } finally {
      delete process.env.PG_POOL_INSTANCES
    }
  })

  test('a lazy pool reads the budget after its first connection', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, { connection: server.url, pool: { max: 2, lazy: true } })
    expect(app.pgPool.budget()).toBeUndefined()
    await app.db`select 1`
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(app.pgPool.budget()).toMatchObject({ maxConnections: 20, demand: 2, exceeded: false })
    await app.close()
  })

  test('pgbouncer mode does not judge the budget (the server sees PgBouncer, not the app)', async () => {
    const { app } = await coreApp(server.url, { max: 30, pgbouncer: true })
    expect(app.pgPool.budget()).toBeUndefined()
    await app.close()
  })
})

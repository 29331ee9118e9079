import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

// The umbrella told a first registration from a later one by the Fastify instance it was given:
// a named instance registered inside an encapsulated plugin (a child context) counted as a first
// registration and registered metrics and health again, and ready failed with
// FST_ERR_DEC_ALREADY_PRESENT. The core alone allowed it.

declare module '@fastify-pg-pool/core' {
  interface PgPoolInstances {
    reporting: true
  }
}

let main: TestDatabase
let reporting: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  main = await createTestDatabase()
  reporting = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(async () => {
  await main?.drop()
  await reporting?.drop()
})

const pool = (db: TestDatabase) => ({ max: 2, pgbouncer: db.viaBouncer, applicationName: uniqueName() })

describe('a named instance registered in a child context', () => {
  test("is served by the first registration's health and metrics, as a sibling registration is", async () => {
    app = Fastify()
    await app.register(pgPool, { connection: main.url, pool: pool(main) })
    await app.register(async (child) => {
      await child.register(pgPool, { name: 'reporting', connection: reporting.url, pool: pool(reporting) })
      child.get('/report', { config: { db: { instance: 'reporting' } } }, async (request) => {
        const [row] = await request.db`select 1 as n`
        return row
      })
    })
    await app.ready()

    expect((await app.inject('/report')).json()).toEqual({ n: 1 })
    const health = await app.inject('/health')
    expect(health.statusCode).toBe(200)
    const entries = Object.values(health.json().checks as Record<string, { componentId: string }[]>).flat()
    expect(new Set(entries.map((entry) => entry.componentId))).toEqual(new Set(['primary', 'reporting']))
    const metrics = parseExposition((await app.inject('/metrics')).body)
    expect(metrics.value('pg_pool_connections_max', { pool: 'reporting' })).toBe(2)
  })

  test('options for a shared part there are refused, as on a sibling registration', async () => {
    app = Fastify()
    await app.register(pgPool, { connection: main.url, pool: pool(main) })
    app.register(async (child) => {
      await child.register(pgPool, {
        name: 'reporting',
        connection: reporting.url,
        pool: pool(reporting),
        metrics: { path: '/reporting/metrics' },
      })
    })
    await expect(app.ready()).rejects.toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining('metrics'),
    })
  })
})

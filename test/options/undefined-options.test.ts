import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolHealth from '@fastify-pg-pool/health'
import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// The runtime side of undefined-options.test-d.ts: each option given as `undefined` (what a config
// object built from the environment holds) is taken as "not given" at register and at run time.

let db: TestDatabase
const apps: FastifyInstance[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(() => db.drop())

const u = undefined as never

describe('options given as undefined are "not given" at run time (held)', () => {
  test('backpressure: retryStorm fields, retryAfter fields, a route priority of undefined, an empty route object', async () => {
    const { app } = await coreApp(db.directUrl, { max: 1 })
    apps.push(app)
    await app.register(pgPoolBackpressure, {
      retryStorm: { factor: u, delay: u },
      process: { maxEventLoopDelay: u, sampleInterval: u },
    })
    app.get(
      '/p',
      { config: { backpressure: { priority: u } } },
      async (request) => (await request.db`select 1 as x`)[0],
    )
    app.get('/e', { config: { backpressure: {} as never } }, async (request) => (await request.db`select 1 as x`)[0])
    expect((await app.inject('/p')).json()).toEqual({ x: 1 })
    expect((await app.inject('/e')).json()).toEqual({ x: 1 })
  })

  test('core: transaction options, route config.db fields, replica maxLag and readYourWrites fields', async () => {
    const { app } = await coreApp(
      db.directUrl,
      { max: 1 },
      {},
      {
        replicas: [db.directUrl],
        replica: {
          maxLag: { bytes: u, seconds: 5 },
          readYourWrites: { secret: 'a-secret-of-16-chars!', header: u, cookie: u, maxWait: u },
        },
      },
    )
    apps.push(app)
    app.get(
      '/t',
      { config: { db: { transaction: { isolation: u, readOnly: true } } } },
      async (request) => (await request.db`select current_setting('transaction_read_only') as ro`)[0],
    )
    app.get(
      '/r',
      { config: { db: { transaction: true, readOnly: u, instance: u, pipeline: u } } },
      async (request) => (await request.db`select 1 as x`)[0],
    )
    expect((await app.inject('/t')).json()).toEqual({ ro: 'on' })
    expect((await app.inject('/r')).json()).toEqual({ x: 1 })
    const out = await app.db.transaction(async (sql) => (await sql`select 1 as x`)[0], {
      isolation: u,
      readOnly: u,
      deferrable: u,
    })
    expect(out).toEqual({ x: 1 })
  })

  test('health: logLevel undefined', async () => {
    const { app } = await coreApp(db.directUrl, { max: 1 })
    apps.push(app)
    await app.register(pgPoolHealth, { logLevel: u })
    expect((await app.inject('/health/live')).statusCode).toBe(200)
  })
})

import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { describe, test } from 'vitest'

// Typos in register options fail the build as well as the registration (test/options/typos.test.ts).
describe('register options', () => {
  test('a misspelled key fails at every level of every package', async () => {
    const app = Fastify()
    // @ts-expect-error helth
    await app.register(pgPool, { helth: false })
    // @ts-expect-error backpresure
    await app.register(pgPool, { backpresure: false })
    // @ts-expect-error Pool
    await app.register(pgPool, { Pool: { max: 2 } })
    // @ts-expect-error onlease
    await app.register(pgPool, { onlease: async () => {} })
    // @ts-expect-error connectionString
    await app.register(pgPool, { connectionString: 'postgres://localhost/app' })
    // @ts-expect-error connectionString
    await app.register(pgPoolCore, { connectionString: 'postgres://localhost/app' })
    // @ts-expect-error pingTimeot
    await app.register(pgPool, { health: { pingTimeot: 5 } })
    // @ts-expect-error pingTimeot
    await app.register(pgPoolHealth, { pingTimeot: 5 })
    // @ts-expect-error aquire
    await app.register(pgPoolMetrics, { buckets: { aquire: [1] } })
    // @ts-expect-error factr
    await app.register(pgPoolBackpressure, { retryStorm: { factr: 2 } })
    // @ts-expect-error maxRSSBytes
    await app.register(pgPool, { backpressure: { process: { maxRSSBytes: 1 } } })
  })

  test("valid options compile, with Fastify's register options", async () => {
    const app = Fastify()
    await app.register(pgPool, {
      connection: 'postgres://localhost/app',
      pool: { max: 5 },
      health: { prefix: '/internal', pingTimeout: 500 },
      metrics: { namePrefix: 'app_', prefix: '/internal' },
      backpressure: { minRetryAfter: 1, maxRetryAfter: 10, retryStorm: false },
      prefix: '/ops',
      logLevel: 'warn',
    })
    await app.register(pgPoolHealth, { prefix: '/internal', logLevel: 'warn' })
    // Deprecated until 1.0, still typed.
    await app.register(pgPoolBackpressure, { retryAfter: { min: 1, max: 10 } })
  })
})

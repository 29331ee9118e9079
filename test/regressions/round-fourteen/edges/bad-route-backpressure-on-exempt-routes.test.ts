import Fastify from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../../support/database.js'

/**
 * backpressure README: "A bad `config.backpressure` on a route added after this plugin throws
 * when the route is added." It does on an ordinary route, but a typo on a route under an `exempt`
 * prefix, or on one declared `config.db: false`, is accepted without a word: the check returns
 * "never refused" before it reads `config.backpressure`. The typo surfaces only when the route
 * stops being exempt (the exempt list changes, `db: false` is removed), as a failed boot.
 */

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

const cases = [
  ['an ordinary route', '/report', { backpressure: { priorty: 'low' } }],
  ['a route under the exempt /health prefix', '/health/deep', { backpressure: { priorty: 'low' } }],
  ['a route under the exempt /metrics prefix', '/metrics/extra', { backpressure: { priority: 'urgent' } }],
  ['a route with config.db: false', '/static', { db: false, backpressure: 'yes' }],
] as const

test.each(cases)('a bad config.backpressure on %s fails when the route is added', async (_label, url, config) => {
  const app = Fastify()
  try {
    await app.register(pgPool, { connection: db.url, pool: { max: 1, applicationName: uniqueName() } })
    let error: (Error & { code?: string }) | undefined
    try {
      app.get(url, { config: config as never }, async () => ({ ok: true }))
      await app.ready()
    } catch (caught) {
      error = caught as Error & { code?: string }
    }
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toContain(`config.backpressure`)
  } finally {
    await app.close().catch(() => {})
  }
})

import Fastify from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../../../support/database.js'

/**
 * The readiness ping runs `onConnect` on its own connection; an `onConnect` that hangs (a lock,
 * a slow function) is inside the ping's `pingTimeout`: readiness answers 503 QUERY_TIMEOUT in
 * time, and the ping's backend does not stay behind on the server.
 */

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

test('a hanging onConnect fails readiness within pingTimeout and leaves no ping backend', async () => {
  const app = Fastify()
  const applicationName = uniqueName()
  let hang = 0
  try {
    await app.register(pgPool, {
      connection: db.url,
      pool: { max: 1, applicationName },
      onConnect: async (connection) => {
        await connection`select pg_sleep(${hang})`
      },
      health: { pingTimeout: 500, cacheTime: 0 },
    })
    app.get('/warm', async (request) => request.db`select 1 as one`)
    await app.ready()
    expect((await app.inject('/warm')).statusCode).toBe(200)
    hang = 8
    const started = performance.now()
    const res = await app.inject('/health/ready')
    const took = performance.now() - started
    expect(res.statusCode).toBe(503)
    expect(res.json()).toMatchObject({ status: 'fail' })
    expect(res.body).toContain('FST_PG_POOL_QUERY_TIMEOUT')
    // Far from the 8 s onConnect: bounded by pingTimeout (0.5 s), give or take a loaded machine.
    expect(took).toBeLessThan(5_000)
    // Only the pool's own session is left on the server.
    const pingSessions = async () => {
      const [row] = await db.admin<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity where application_name like ${`${applicationName}%`}
        and application_name <> ${applicationName}`
      return row?.n ?? 0
    }
    expect(await waitFor(async () => (await pingSessions()) === 0, 3_000)).toBe(true)
  } finally {
    await app.close()
  }
}, 60_000)

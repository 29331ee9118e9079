import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify from 'fastify'
import type postgres from 'postgres'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'

// An opening given up while onConnect's statement waits on a lock only closed its socket: a
// backend waiting on a lock never notices its client left, so each one stayed on the server
// (for the ping, until the lock was released; for the pool, until statement_timeout).

const LOCK = 4242

let db: TestDatabase
let holder: postgres.ReservedSql
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db?.drop())
beforeEach(async () => {
  holder = await db.sql.reserve()
  await holder`select pg_advisory_lock(${LOCK})`
})
afterEach(async () => {
  await holder`select pg_advisory_unlock(${LOCK})`
  holder.release()
})

const waitOnLock = async (sql: postgres.Sql<{}>) => {
  await sql`select pg_advisory_lock(${LOCK})`
}

/** Whether no backend named `name` is left on the server within `timeoutMs`, and how many are. */
async function goneWithin(name: string, timeoutMs: number): Promise<[boolean, number]> {
  const gone = await waitFor(async () => (await db.countConnections(name)) === 0, timeoutMs)
  return [gone, await db.countConnections(name)]
}

describe('an onConnect that waits on a lock', () => {
  test("pings that time out leave no '/ping' backend on the server", async () => {
    const applicationName = uniqueName()
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: db.directUrl,
      pool: { max: 1, lazy: true, applicationName },
      onConnect: waitOnLock,
    })
    try {
      for (let i = 0; i < 3; i++) {
        const failure = await app.pgPool.ping(300).catch((error: { code?: string }) => error)
        expect((failure as { code?: string }).code).toBe('FST_PG_POOL_QUERY_TIMEOUT')
      }
      const [gone, left] = await goneWithin(`${applicationName}/ping`, 2_000)
      expect(gone, `${left} '/ping' backends left after 3 failed pings`).toBe(true)
    } finally {
      await app.close()
    }
  }, 20_000)

  test("failed readiness probes leave no '/ping' backend on the server", async () => {
    const applicationName = uniqueName()
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: db.directUrl,
      pool: { max: 1, lazy: true, applicationName },
      onConnect: waitOnLock,
    })
    await app.register(pgPoolHealth, { pingTimeout: 200, cacheTime: 0 })
    try {
      for (let i = 0; i < 6; i++) expect((await app.inject('/health/ready')).statusCode).toBe(503)
      const [gone, left] = await goneWithin(`${applicationName}/ping`, 2_000)
      expect(gone, `${left} '/ping' backends left after 6 answered probes`).toBe(true)
    } finally {
      await app.close()
    }
  }, 20_000)

  test('pool openings past connectTimeout leave no backend on the server', async () => {
    const applicationName = uniqueName()
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: db.directUrl,
      pool: { max: 1, lazy: true, applicationName, connectTimeout: 300, acquireTimeout: 1_000 },
      onConnect: waitOnLock,
    })
    app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
    try {
      expect((await app.inject('/q')).statusCode).toBe(503)
      await app.close()
      const [gone, left] = await goneWithin(applicationName, 2_000)
      expect(gone, `${left} backends of the pool left after app.close()`).toBe(true)
    } finally {
      await app.close()
    }
  }, 20_000)
})

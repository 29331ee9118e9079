import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Issue 17 item 8 (the core's part): a misspelled top-level option registered without a word
// on fd52652; a misspelled `onlease` silently switched off a tenant/RLS hook.

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

async function register(options: Record<string, unknown>): Promise<unknown> {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection: db.url, pool: { lazy: true }, ...options } as never)
    await app.ready()
    return undefined
  } catch (error) {
    return error
  } finally {
    await app.close()
  }
}

describe('the core refuses unknown options at register, naming the closest valid one', () => {
  const cases: [Record<string, unknown>, string, string][] = [
    [{ onlease: async () => {} }, 'onlease', 'onLease'],
    [{ Pool: { max: 2 } }, 'Pool', 'pool'],
    [{ connectionString: 'postgres://x@localhost/y' }, 'connectionString', 'connection'],
    [{ pool: { lazy: true, acquireTimout: 100 } }, 'pool.acquireTimout', 'acquireTimeout'],
    [{ pool: { lazy: true, maxWaitng: 1 } }, 'pool.maxWaitng', 'maxWaiting'],
  ]
  for (const [options, key, suggestion] of cases) {
    test(`${key} -> FST_PG_POOL_INVALID_OPTION suggesting ${suggestion}`, async () => {
      const error = (await register(options)) as { code?: string; message?: string } | undefined
      expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(error?.message).toContain(key)
      expect(error?.message).toContain(suggestion)
    })
  }

  test("Fastify's own register options are not typos", async () => {
    expect(await register({ logLevel: 'warn' })).toBeUndefined()
  })
})

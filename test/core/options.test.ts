import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

const secret = 'S3cr3t-pa55word'
const urlWithSecret = `postgres://app:${secret}@127.0.0.1:1/nowhere`

async function registerError(options: Parameters<typeof pgPoolCore>[1]): Promise<Error & { code?: string }> {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, options)
    await app.ready()
  } catch (error) {
    return error as Error & { code?: string }
  } finally {
    await app.close().catch(() => {})
  }
  throw new Error('register did not fail')
}

describe('options are validated at register', () => {
  test.each([
    [{ max: 0 }, 'pool.max', '0'],
    [{ max: 'x' as unknown as number }, 'pool.max', '"x"'],
    [{ max: 2.5 }, 'pool.max', '2.5'],
    [{ acquireTimeout: -1 }, 'pool.acquireTimeout', '-1'],
    [{ maxWaiting: 'lots' as unknown as number }, 'pool.maxWaiting', '"lots"'],
    [{ idleTimout: 5 } as object, 'pool.idleTimout', 'unknown option'],
    [{ sessionReset: 'sometimes' as 'always' }, 'pool.sessionReset', '"sometimes"'],
    [{ pgbouncer: 'yes' as unknown as boolean }, 'pool.pgbouncer', '"yes"'],
  ])('pool %j names the option and the value', async (pool, name, shown) => {
    const error = await registerError({ connection: db.url, pool: pool as never })
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error.message).toContain(name)
    expect(error.message).toContain(shown)
  })

  test('a malformed URL is refused without echoing its password', async () => {
    const error = await registerError({ connection: `postgres://app:${secret}@127.0.0.1:99999999/db` })
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error.message).toContain('connection')
    expect(error.message).not.toContain(secret)
    expect(error.message).toContain('not shown')
  })

  test('a URL of another scheme is refused without its password', async () => {
    const error = await registerError({ connection: `mysql://app:${secret}@127.0.0.1/db` })
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error.message).not.toContain(secret)
  })

  test('max from the URL is validated like the option, named where it was given', async () => {
    const error = await registerError({ connection: `postgres://app:${secret}@127.0.0.1/db?max=ten` })
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error.message).toContain('connection ?max=')
    expect(error.message).not.toContain(secret)
  })

  test('options the pool owns are refused in postgres.js options', async () => {
    // A type error too (ConnectionOptions leaves them out): what JavaScript gives is refused.
    const error = await registerError({ connection: { host: '127.0.0.1', idle_timeout: 5 } as never })
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error.message).toContain('connection.idle_timeout')
  })

  test('an unreachable database fails register with a coded error and no password', async () => {
    const error = await registerError({ connection: urlWithSecret, pool: { connectTimeout: 500 } })
    expect(error.code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect(error.message).not.toContain(secret)
  })

  test('resolved options are frozen and carry documented defaults', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, { connection: db.url, pool: { lazy: true } })
    const options = app.pgPool.options
    expect(Object.isFrozen(options)).toBe(true)
    expect(options).toMatchObject({
      max: 10,
      acquireTimeout: 5_000,
      maxWaiting: 100,
      idleTimeout: 30_000,
      maxLifetime: 1_800_000,
      connectTimeout: 5_000,
      statementTimeout: 30_000,
      leakDetectionThreshold: 30_000,
      closeTimeout: 10_000,
      applicationName: 'fastify-pg-pool',
      pgbouncer: false,
      sessionReset: 'always',
      retryAfter: 1,
      lazy: true,
      instances: 1,
    })
    expect(app.pgPool.target).not.toContain(db.password || 'no-password')
    await app.close()
  })

  test('statementTimeout and application_name reach the server', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: db.url,
      pool: { statementTimeout: 1234, applicationName: 'fpp-options-test' },
    })
    const [row] = await app.db`select current_setting('statement_timeout') as st,
      current_setting('application_name') as app`
    expect(row).toEqual({ st: '1234ms', app: 'fpp-options-test' })
    await app.close()
  })
})

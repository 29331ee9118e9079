import { createServer } from 'node:net'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

// Issue 19: without `connection`, DATABASE_URL is used, before the PG* variables.

const ENV_KEYS = ['DATABASE_URL', 'PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGPASSWORD', 'PGAPPNAME', 'PGMAX']
const saved = Object.fromEntries(ENV_KEYS.map((key) => [key, process.env[key]]))

let db: TestDatabase
let database: string
/** A port nothing listens on: a connection there is refused at once. */
let closedPort: number
let apps: FastifyInstance[] = []

function clearEnv(): void {
  for (const key of ENV_KEYS) delete process.env[key]
}

function withParams(url: string, params: Record<string, string>): string {
  const parsed = new URL(url)
  for (const [key, value] of Object.entries(params)) parsed.searchParams.set(key, value)
  return parsed.toString()
}

function app(): FastifyInstance {
  const instance = Fastify()
  apps.push(instance)
  return instance
}

async function registerError(instance: FastifyInstance, register: () => PromiseLike<unknown>) {
  return Promise.resolve(register())
    .then(() => instance.ready())
    .then(
      () => undefined,
      (error: Error & { code?: string }) => error,
    )
}

beforeAll(async () => {
  db = await createTestDatabase()
  database = new URL(db.directUrl).pathname.slice(1)
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  closedPort = (server.address() as { port: number }).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
})
afterEach(async () => {
  await Promise.all(apps.map((instance) => instance.close().catch(() => {})))
  apps = []
  clearEnv()
  for (const [key, value] of Object.entries(saved)) if (value !== undefined) process.env[key] = value
})
afterAll(() => db.drop())

describe('DATABASE_URL', () => {
  test('is used when no connection is given: its database, its query options, no password in the target', async () => {
    clearEnv()
    const applicationName = uniqueName('dburl')
    process.env.DATABASE_URL = withParams(db.directUrl, { application_name: applicationName, max: '3' })
    const instance = app()
    await instance.register(pgPoolCore)
    expect(await instance.db`select current_database() as name`).toEqual([{ name: database }])
    expect(await db.countConnections(applicationName)).toBeGreaterThan(0)
    expect(instance.pgPool.options).toMatchObject({ max: 3, applicationName })
    const parsed = new URL(db.directUrl)
    expect(instance.pgPool.target).toBe(`${parsed.hostname}:${parsed.port}/${database}`)
    if (db.password) expect(instance.pgPool.redact(`pw=${db.password}`)).toBe('pw=***')
  })

  test('wins over the PG* variables', async () => {
    clearEnv()
    Object.assign(process.env, {
      PGHOST: '127.0.0.1',
      PGPORT: String(closedPort),
      PGDATABASE: 'no_such_database',
      DATABASE_URL: db.directUrl,
    })
    const instance = app()
    await instance.register(pgPoolCore, { pool: { max: 1 } })
    expect(await instance.db`select current_database() as name`).toEqual([{ name: database }])
  })

  test('unset or empty: the PG* variables are used', async () => {
    const parsed = new URL(db.directUrl)
    for (const databaseUrl of [undefined, '']) {
      clearEnv()
      Object.assign(process.env, {
        PGHOST: parsed.hostname,
        PGPORT: parsed.port,
        PGDATABASE: database,
        PGUSER: decodeURIComponent(parsed.username),
        ...(parsed.password ? { PGPASSWORD: decodeURIComponent(parsed.password) } : {}),
      })
      if (databaseUrl !== undefined) process.env.DATABASE_URL = databaseUrl
      const instance = app()
      await instance.register(pgPoolCore, { pool: { max: 1 } })
      expect(await instance.db`select current_database() as name`).toEqual([{ name: database }])
      expect(instance.pgPool.target).toBe(`${parsed.hostname}:${parsed.port}/${database}`)
    }
  })

  test('a given connection wins over DATABASE_URL', async () => {
    clearEnv()
    process.env.DATABASE_URL = `postgres://nobody:secret-pw@127.0.0.1:${closedPort}/nowhere`
    const instance = app()
    await instance.register(pgPoolCore, { connection: db.directUrl, pool: { max: 1 } })
    expect(await instance.db`select current_database() as name`).toEqual([{ name: database }])

    // Without it, DATABASE_URL is what register tries, and fails on.
    const other = app()
    const error = await registerError(other, () => other.register(pgPoolCore, { pool: { connectTimeout: 2_000 } }))
    expect(error?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect(String((error?.cause as Error | undefined)?.message)).not.toContain('secret-pw')
  })

  test('an invalid DATABASE_URL fails register with FST_PG_POOL_INVALID_OPTION, its password hidden', async () => {
    clearEnv()
    process.env.DATABASE_URL = 'mysql://user:hunter2-secret@localhost/app'
    const instance = app()
    const error = await registerError(instance, () => instance.register(pgPoolCore))
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toMatch(/^Invalid option connection: expected a postgres:\/\/ URL/)
    expect(error?.message).not.toContain('hunter2-secret')
  })

  test('the umbrella, registered with no connection, uses it too', async () => {
    clearEnv()
    process.env.DATABASE_URL = db.directUrl
    const instance = app()
    await instance.register(pgPool, { pool: { max: 2 } })
    instance.get('/db', async (request) => (await request.db`select current_database() as name`)[0])
    expect((await instance.inject('/db')).json()).toEqual({ name: database })
    expect((await instance.inject('/health/ready')).statusCode).toBe(200)
  })
})

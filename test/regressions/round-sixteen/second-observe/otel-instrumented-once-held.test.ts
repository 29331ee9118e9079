// Round sixteen (second observability probe), held. This round's otel fix keeps, per process, the
// pools some instrumentation follows (a WeakSet) and refuses a second one at register. Tried:
// an app closed and a new one built in the same process (a test file, a hot restart), the
// umbrella with `otel` on beside a pgPoolOtel the user registers too (refused, and the app after
// it not refused for the pools of the refused one), and a named instance registered after the
// umbrella (instrumented once, its statements one span each). Each statement has one span.
import pgPoolOtel from '@fastify-pg-pool/otel'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestSdk, type TestSdk } from '../../../otel/sdk.js'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

let db: TestDatabase
let sdk: TestSdk
beforeAll(async () => {
  db = await createTestDatabase()
  sdk = startTestSdk({ global: true })
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

const statementSpans = (name: string) =>
  sdk.spans().filter((s) => s.instrumentationScope.name === '@fastify-pg-pool/otel' && s.name === name).length

async function appWithRoutes(): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(pgPool, { connection: db.url, otel: {}, pool: { max: 2 } })
  app.get('/one', async (request) => (await request.db`select 1 as one`)[0])
  return app
}

test('closed and built again in the same process: one span per statement each time', async () => {
  for (let round = 0; round < 2; round++) {
    const app = await appWithRoutes()
    try {
      await app.ready()
      sdk.reset()
      expect((await app.inject('/one')).statusCode).toBe(200)
      expect(statementSpans('select')).toBe(1)
    } finally {
      await app.close()
    }
  }
})

test('the umbrella with otel and the user registering pgPoolOtel too: refused; the next app is not', async () => {
  const twice = await appWithRoutes()
  twice.register(pgPoolOtel)
  await expect(twice.ready()).rejects.toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
  await twice.close()

  const app = await appWithRoutes()
  try {
    await app.register(pgPool, { name: 'reports', connection: db.url })
    app.get('/reports', { config: { db: { instance: 'reports' } } }, async (request) => {
      const reports = request.dbs.reports
      if (reports === undefined) throw new Error('no reports instance on the request')
      return (await reports`select 2 as two`)[0]
    })
    await app.ready()
    expect(app.pgPoolOtel.poolNames).toHaveLength(2)
    sdk.reset()
    expect((await app.inject('/one')).statusCode).toBe(200)
    expect((await app.inject('/reports')).statusCode).toBe(200)
    expect(statementSpans('select')).toBe(2)
  } finally {
    await app.close()
  }
})

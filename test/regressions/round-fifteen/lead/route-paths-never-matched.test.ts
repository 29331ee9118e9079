// The user gives a health, metrics or exemption path that Fastify can never match as written, or
// that matches far more than the one route: `livePath: '/live?x=1'` (a route no probe reaches: the
// query is not part of the path, so the kubelet's liveness probe gets 404 and restarts the pod),
// `livePath: '/:probe'` or `'/*'` (a parametric route that answers every unknown path with health
// JSON), `'/a b'`, `'/health#x'`, `'/health//live'`; `exempt: ['/a?b']` (an exemption that never
// applies). They should be refused at register with FST_PG_POOL_INVALID_OPTION naming the option;
// they were accepted and the routes registered as given.
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

async function registerError(
  options: Record<string, unknown>,
): Promise<{ code?: string; message: string } | undefined> {
  const app = Fastify()
  try {
    await app.register(pgPool, { connection: db.url, pool: { lazy: true }, ...options } as never)
    await app.ready()
    return undefined
  } catch (error) {
    return error as { code?: string; message: string }
  } finally {
    await app.close().catch(() => {})
  }
}

const badPaths = ['/live?x=1', '/health#live', '/:probe', '/health/*', '/a b', '/health//live', '/live\n']

test.each(badPaths)('health paths that never match or match too much are refused: %j', async (path) => {
  for (const key of ['livePath', 'readyPath', 'healthPath'] as const) {
    const error = await registerError({ health: { [key]: path } })
    expect(error?.code, `${key} ${JSON.stringify(path)}`).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toContain(`health.${key}`)
  }
})

test.each(badPaths)('the metrics path and prefixes are refused alike: %j', async (path) => {
  const metrics = await registerError({ metrics: { path } })
  expect(metrics?.code).toBe('FST_PG_POOL_INVALID_OPTION')
  expect(metrics?.message).toContain('metrics.path')
  const prefix = await registerError({ health: { prefix: path } })
  expect(prefix?.code).toBe('FST_PG_POOL_INVALID_OPTION')
  expect(prefix?.message).toContain('health.prefix')
})

test.each(['/a?b', '/a#b', '/a b', '/a//b'])('an exemption that can never apply is refused: %j', async (path) => {
  const error = await registerError({ backpressure: { exempt: [path] } })
  expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
  expect(error?.message).toContain('backpressure.exempt')
})

test('plain paths are still taken, and answer', async () => {
  const app = Fastify()
  try {
    await app.register(pgPool, {
      connection: db.url,
      health: { prefix: '/internal/', livePath: '/live-1', readyPath: '/ready.json', healthPath: '/h_ealth/~x' },
      metrics: { path: '/prom/metrics' },
      backpressure: { exempt: ['/internal', '/prom/', '/'] },
    } as never)
    await app.ready()
    expect((await app.inject('/internal/live-1')).statusCode).toBe(200)
    expect((await app.inject('/internal/ready.json')).statusCode).toBe(200)
    expect((await app.inject('/internal/h_ealth/~x')).statusCode).toBe(200)
    expect((await app.inject('/prom/metrics')).statusCode).toBe(200)
  } finally {
    await app.close()
  }
})

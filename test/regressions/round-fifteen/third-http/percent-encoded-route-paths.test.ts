// What the user does: gives the health or metrics plugin a path written percent-encoded, as it
// appears in a URL (`livePath: '/sant%C3%A9'` for /santé, `metrics: { path: '/metrics%20v2' }`),
// or exempts one from admission control (`exempt: ['/caf%C3%A9']`).
// What they should get: the path refused at register (FST_PG_POOL_INVALID_OPTION, as a query,
// blank or empty segment is since round fifteen), or a route the probe reaches when it requests
// the path as written.
// What they got: accepted, and the route never answers: Fastify decodes the request's path before
// matching it, so '/sant%C3%A9' is looked up as '/santé' and the kubelet's liveness probe gets 404
// (the pod is restarted in a loop); the exemption never applies to any route.
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

/** Registers the umbrella with `options`: the register error's code, or the status of GET `url`. */
async function outcome(options: Record<string, unknown>, url?: string): Promise<string | number> {
  const app = Fastify()
  try {
    await app.register(pgPool, { connection: db.url, pool: { lazy: true }, ...options } as never)
    await app.ready()
    return url === undefined ? 'registered' : (await app.inject(url)).statusCode
  } catch (error) {
    return (error as { code: string }).code
  } finally {
    await app.close().catch(() => {})
  }
}

const reachedOrRefused = [200, 'FST_PG_POOL_INVALID_OPTION']

test.each(['/sant%C3%A9', '/health%20live', '/a%2Fb'])(
  'a percent-encoded health path is refused, or answers: %j',
  async (path) => {
    expect(reachedOrRefused).toContain(await outcome({ health: { livePath: path } }, path))
  },
)

test('a percent-encoded metrics path is refused, or answers', async () => {
  expect(reachedOrRefused).toContain(await outcome({ metrics: { path: '/metrics%20v2' } }, '/metrics%20v2'))
})

test('a percent-encoded exemption is refused', async () => {
  expect(await outcome({ backpressure: { exempt: ['/caf%C3%A9'] } })).toBe('FST_PG_POOL_INVALID_OPTION')
})

test('a literal % and unicode are still taken, and answer (held)', async () => {
  expect(await outcome({ health: { livePath: '/100%' } }, '/100%25')).toBe(200)
  expect(await outcome({ health: { livePath: '/santé' } }, '/sant%C3%A9')).toBe(200)
  expect(await outcome({ backpressure: { exempt: ['/100%', '/santé'] } })).toBe('registered')
})

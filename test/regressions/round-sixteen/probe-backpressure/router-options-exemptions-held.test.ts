import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../../../support/database.js'

// HELD (round sixteen, backpressure probe). What was tried: Fastify's router options
// (`routerOptions: { ignoreTrailingSlash, ignoreDuplicateSlashes, caseSensitive: false,
// maxParamLength }`), routes under an exempt prefix declared in a prefixed plugin (whose `/`
// route Fastify registers as both `/health` and `/health/`), the HEAD routes Fastify adds to GET
// routes, OPTIONS, and unknown URLs, while every route that may use the database is refused
// (process pressure: a heap threshold of 1 byte). Exemptions are matched on the route template,
// so a request that reaches an exempt route by another spelling (`/health/db/`, `//health//db`,
// `/HEALTH/DB`) is still let through; a HEAD of a refused GET route is refused the same way
// (503, Retry-After); the exempt routes' HEADs answer; OPTIONS and unknown URLs get Fastify's 404, a parameter past
// maxParamLength its 414.

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

test('router options and HEAD routes neither shed exempt routes nor let refused routes through', async () => {
  const instance = Fastify({
    routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, caseSensitive: false, maxParamLength: 8 },
  })
  app = instance
  await instance.register(pgPoolCore, { connection: db.url, pool: { max: 2, applicationName: uniqueName() } })
  await instance.register(pgPoolBackpressure, {
    retryStorm: false,
    minRetryAfter: 3,
    maxRetryAfter: 9,
    process: { maxHeapUsedBytes: 1, sampleInterval: 50 },
  })
  const query = async (request: { db: (s: TemplateStringsArray) => Promise<unknown> }) => {
    await request.db`select 1`
    return { ok: true }
  }
  instance.get('/items/:id', query)
  instance.get('/health/db', query)
  await instance.register(
    async (child) => {
      child.get('/', query)
      child.get('/deep/:check', query)
    },
    { prefix: '/health' },
  )
  await instance.ready()
  await waitUntil(async () => (await instance.inject('/items/1')).statusCode === 503, 'process pressure', 10_000)

  const refused = await instance.inject('/items/1')
  expect(refused.statusCode).toBe(503)
  expect(refused.headers['retry-after']).toBe('3')
  expect(refused.json().code).toBe('FST_PG_POOL_PROCESS_PRESSURE')
  const head = await instance.inject({ method: 'HEAD', url: '/items/1' })
  expect(head.statusCode).toBe(503)
  expect(head.headers['retry-after']).toBe('3')
  expect((await instance.inject('/ITEMS/1/')).statusCode).toBe(503)

  const exempt = [
    ['GET', '/health/db'],
    ['GET', '/health/db/'],
    ['GET', '//health//db'],
    ['GET', '/HEALTH/DB'],
    ['GET', '/health'],
    ['GET', '/health/'],
    ['GET', '/health/deep/x'],
    ['GET', '/Health/Deep/x/'],
    ['HEAD', '/health/db'],
    ['HEAD', '/health'],
  ] as const
  for (const [method, url] of exempt) {
    const res = await instance.inject({ method, url })
    expect({ method, url, status: res.statusCode }).toEqual({ method, url, status: 200 })
  }
  for (const [method, url, status] of [
    ['OPTIONS', '/items/1', 404],
    ['GET', '/nowhere', 404],
    // Fastify's own answer to a parameter past maxParamLength, not a refusal.
    ['GET', '/items/longer-than-maxParamLength', 414],
  ] as const) {
    const res = await instance.inject({ method, url })
    expect({ method, url, status: res.statusCode }).toEqual({ method, url, status })
  }
}, 30_000)

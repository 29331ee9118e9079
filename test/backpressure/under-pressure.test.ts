import { createRequire } from 'node:module'
import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance, type FastifyPluginAsync } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Issue 19: an app that registers @fastify/under-pressure itself, then this suite's
// backpressure, used to fail with "The decorator 'memoryUsage' has already been added!".

const FIX =
  'Invalid option backpressure.process: @fastify/under-pressure is registered on this app already; pass ' +
  'backpressure: { process: false } to keep its process checks (this plugin then does admission control only), ' +
  'or remove it to let this plugin register it'

/** The @fastify/under-pressure the backpressure package depends on (not a dependency of the tests). */
const underPressure = createRequire(createRequire(import.meta.url).resolve('@fastify-pg-pool/backpressure'))(
  '@fastify/under-pressure',
) as FastifyPluginAsync<{
  healthCheck?: () => Promise<boolean>
  healthCheckInterval?: number
  maxEventLoopDelay?: number
}>
/** What it decorates the app with. */
type UnderPressureApp = FastifyInstance & { memoryUsage: () => unknown; isUnderPressure: () => boolean }

let db: TestDatabase
let apps: FastifyInstance[] = []

beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.map((app) => app.close().catch(() => {})))
  apps = []
})
afterAll(() => db.drop())

function app(): FastifyInstance {
  const instance = Fastify()
  apps.push(instance)
  return instance
}

async function readyError(instance: FastifyInstance): Promise<(Error & { code?: string }) | undefined> {
  return instance.ready().then(
    () => undefined,
    (error: Error & { code?: string }) => error,
  )
}

/** The app's own under-pressure, whose health check the test turns off and on. */
function appUnderPressure(instance: FastifyInstance, healthy: { value: boolean }) {
  return instance.register(underPressure, {
    healthCheck: async () => healthy.value,
    healthCheckInterval: 20,
  })
}

/** A route that holds its connection until `release` is called, and one that queries at once. */
function routes(instance: FastifyInstance) {
  let release = () => {}
  const held = new Promise<void>((resolve) => {
    release = resolve
  })
  instance.get('/hold', async (request) => {
    await request.db`select 1`
    await held
    return { ok: true }
  })
  instance.get('/q', async (request) => (await request.db`select 1 as one`)[0])
  return { release: () => release() }
}

/**
 * With process: false beside the app's under-pressure: admission control refuses at the door
 * (queue at its cap), and the app's under-pressure refuses with its own reply when unhealthy.
 */
async function expectBothWork(app: FastifyInstance, healthy: { value: boolean }, release: () => void) {
  const instance = app as UnderPressureApp
  expect((await instance.inject('/q')).json()).toEqual({ one: 1 })
  expect(typeof instance.memoryUsage).toBe('function')

  // max 1, maxWaiting 0: with the one connection leased, the next request is refused at the door.
  const holding = instance.inject('/hold')
  expect(await waitFor(() => instance.pgPool.stats().leased === 1)).toBe(true)
  const refused = await instance.inject('/q')
  expect(refused.statusCode).toBe(503)
  expect(refused.json()).toMatchObject({ code: 'FST_PG_POOL_QUEUE_FULL' })
  release()
  expect((await holding).statusCode).toBe(200)

  healthy.value = false
  expect(await waitFor(() => instance.isUnderPressure())).toBe(true)
  const pressured = await instance.inject('/q')
  expect(pressured.statusCode).toBe(503)
  expect(pressured.json()).toMatchObject({ code: 'FST_UNDER_PRESSURE' })
  healthy.value = true
  expect(await waitFor(() => !instance.isUnderPressure())).toBe(true)
  expect((await instance.inject('/q')).statusCode).toBe(200)
}

describe('beside an @fastify/under-pressure the app registered', () => {
  test('registered before it, with process checks on: a coded error that says to pass process: false', async () => {
    const instance = app()
    await instance.register(pgPoolCore, { connection: db.url })
    await appUnderPressure(instance, { value: true })
    instance.register(pgPoolBackpressure)
    const error = await readyError(instance)
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toBe(FIX)
    expect(error?.message).not.toMatch(/has already been added/)

    // The same through the umbrella, whose backpressure (with process checks) is on by default.
    const umbrella = app()
    await appUnderPressure(umbrella, { value: true })
    umbrella.register(pgPool, { connection: db.url })
    const viaUmbrella = await readyError(umbrella)
    expect(viaUmbrella?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(viaUmbrella?.message).toBe(FIX)
  })

  test('registered before it, with process: false: the app keeps its process checks, admission control works', async () => {
    const healthy = { value: true }
    const instance = app()
    await instance.register(pgPoolCore, { connection: db.url, pool: { max: 1, maxWaiting: 0 } })
    await appUnderPressure(instance, healthy)
    await instance.register(pgPoolBackpressure, { process: false })
    const { release } = routes(instance)
    await instance.ready()
    await expectBothWork(instance, healthy, release)
  })

  test('registered after it, with process: false: the same', async () => {
    const healthy = { value: true }
    const instance = app()
    await instance.register(pgPoolCore, { connection: db.url, pool: { max: 1, maxWaiting: 0 } })
    await instance.register(pgPoolBackpressure, { process: false })
    await appUnderPressure(instance, healthy)
    const { release } = routes(instance)
    await instance.ready()
    await expectBothWork(instance, healthy, release)

    // The umbrella with backpressure: { process: false } also leaves the app's under-pressure alone.
    const umbrella = app()
    await appUnderPressure(umbrella, { value: true })
    await umbrella.register(pgPool, {
      connection: db.url,
      pool: { max: 1 },
      backpressure: { process: false },
      metrics: false,
    })
    umbrella.get('/q', async (request) => (await request.db`select 1 as one`)[0])
    expect((await umbrella.inject('/q')).json()).toEqual({ one: 1 })
    expect((await umbrella.inject('/health/ready')).statusCode).toBe(200)
  })

  test('registered after it with process checks on: the app’s under-pressure fails on the decorator (register it first, or pass process: false)', async () => {
    const instance = app()
    await instance.register(pgPoolCore, { connection: db.url })
    await instance.register(pgPoolBackpressure)
    instance.register(underPressure, { maxEventLoopDelay: 1000 })
    const error = await readyError(instance)
    // Fastify's own error: a plugin registered later cannot be seen coming.
    expect(error?.code).toBe('FST_ERR_DEC_ALREADY_PRESENT')
    expect(error?.message).toBe("The decorator 'memoryUsage' has already been added!")
  })
})

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Hostile probing, round 2: attacks on the umbrella's first-registration key (app.server) and on
// requireInstances checked at onReady that held (pass on the current code).

let main: TestDatabase
let other: TestDatabase
let apps: FastifyInstance[] = []
beforeAll(async () => {
  main = await createTestDatabase()
  other = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.map((app) => app.close().catch(() => {})))
  apps = []
})
afterAll(async () => {
  await main.drop()
  await other.drop()
})

const track = (app: FastifyInstance) => {
  apps.push(app)
  return app
}
const failure = (promise: PromiseLike<unknown>) =>
  Promise.resolve(promise).then(
    () => undefined,
    (error: Error & { code?: string }) => error,
  )
const componentIds = async (app: FastifyInstance) =>
  ((await app.inject('/health')).json().checks['postgres:responseTime'] as { componentId: string }[])
    .map((check) => check.componentId)
    .sort()

describe('the umbrella in several apps of one process', () => {
  test('two apps at once: each gets its own /health and /metrics', async () => {
    const a = track(Fastify())
    const b = track(Fastify())
    await a.register(pgPool, { connection: main.url, pool: { max: 1 } })
    await b.register(pgPool, { connection: other.url, pool: { max: 1 } })
    await Promise.all([a.ready(), b.ready()])
    for (const app of [a, b]) {
      expect((await app.inject('/health')).statusCode).toBe(200)
      expect((await app.inject('/metrics')).statusCode).toBe(200)
      expect(await componentIds(app)).toEqual(['primary'])
    }
  })

  test('serverFactory: a new app on the same server after close() is a first registration again', async () => {
    let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined
    const server = createServer((req, res) => handler?.(req, res))
    const build = () =>
      Fastify({
        serverFactory: (h) => {
          handler = h
          return server
        },
      })
    const first = build()
    await first.register(pgPool, { connection: main.url, pool: { max: 1 } })
    await first.ready()
    await first.close()
    const second = track(build())
    await second.register(pgPool, { connection: main.url, pool: { max: 1 }, health: { healthPath: '/h2' } })
    await second.ready()
    expect((await second.inject('/h2')).statusCode).toBe(200)
    expect((await second.inject('/metrics')).statusCode).toBe(200)
  })

  test('first registration with health: false; a named one after it giving health options is refused, coded', async () => {
    const app = track(Fastify())
    await app.register(pgPool, { connection: main.url, pool: { max: 1 }, health: false })
    const error = await failure(
      app.register(pgPool, { name: 'other', connection: other.url, pool: { max: 1 }, health: { readyPath: '/r' } }),
    )
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toMatch(/health/)
  })

  test('a register whose core failed does not make the next app (new server) a later registration', async () => {
    const bad = Fastify()
    expect(
      (
        await failure(
          bad
            .register(pgPool, { connection: 'postgres://nobody@127.0.0.1:1/x', pool: { max: 1, connectTimeout: 300 } })
            .ready(),
        )
      )?.code,
    ).toBe('FST_PG_POOL_CONNECT_FAILED')
    await bad.close().catch(() => {})
    const good = track(Fastify())
    await good.register(pgPool, { connection: main.url, pool: { max: 1 } })
    await good.ready()
    expect((await good.inject('/health')).statusCode).toBe(200)
  })
})

describe('requireInstances, checked at onReady', () => {
  test('an instance registered after health, without await, counts', async () => {
    const app = track(Fastify())
    app.register(pgPoolCore, { connection: main.url, pool: { max: 1 } })
    app.register(pgPoolHealth, { requireInstances: ['orders'] })
    app.register(pgPoolCore, { name: 'orders', connection: other.url, pool: { max: 1 } })
    expect((await failure(app.ready()))?.message).toBeUndefined()
    expect((await app.inject('/health/ready')).json().status).toBe('pass')
  })

  test('an instance registered inside a sibling encapsulated plugin after health counts', async () => {
    const app = track(Fastify())
    await app.register(pgPoolCore, { connection: main.url, pool: { max: 1 } })
    await app.register(pgPoolHealth, { requireInstances: ['orders'] })
    app.register(async (child) => {
      await child.register(pgPoolCore, { name: 'orders', connection: other.url, pool: { max: 1 } })
    })
    expect((await failure(app.ready()))?.message).toBeUndefined()
  })

  test("a replica's label or 'primary' is not an instance name: refused, coded", async () => {
    for (const name of ['primary', 'replica-0']) {
      const app = track(Fastify())
      await app.register(pgPoolCore, { connection: main.url, pool: { max: 1 } })
      await app.register(pgPoolHealth, { requireInstances: [name] })
      expect((await failure(app.ready()))?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    }
  })

  test('an unreachable required instance fails readiness (lazy, registered later)', async () => {
    const app = track(Fastify())
    await app.register(pgPoolCore, { connection: main.url, pool: { max: 1 } })
    await app.register(pgPoolHealth, { requireInstances: ['orders'], pingTimeout: 2_000 })
    await app.register(pgPoolCore, {
      name: 'orders',
      connection: 'postgres://nobody@127.0.0.1:1/orders',
      pool: { max: 1, lazy: true, connectTimeout: 500 },
    })
    await app.ready()
    const ready = await app.inject('/health/ready')
    expect({ status: ready.statusCode, body: ready.json().status }).toEqual({ status: 503, body: 'fail' })
  })
})

describe('the budget on distinct servers', () => {
  test('named instances on one server are summed, a lazy one once it connects; pools lists them', async () => {
    const app = track(Fastify())
    await app.register(pgPoolCore, { connection: main.url, pool: { max: 2 } })
    await app.register(pgPoolCore, { name: 'b', connection: other.url, pool: { max: 3 } })
    await app.register(pgPoolCore, { name: 'c', connection: other.url, pool: { max: 4, lazy: true } })
    await app.register(pgPoolHealth)
    await app.ready()
    // c is lazy: counted once it opened a connection.
    const c = app.dbs.c
    if (c === undefined) throw new Error('no instance c')
    await c`select 1`
    const deadline = Date.now() + 20_000
    while ((app.pgPool.budget()?.serverDemand ?? 0) < 9 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20))
    expect(app.pgPool.budget()).toMatchObject({ demand: 2, serverDemand: 9 })
    expect(app.pgPools.get('b')?.budget()).toMatchObject({ demand: 3, serverDemand: 9, pools: ['b', 'primary', 'c'] })
  })
})

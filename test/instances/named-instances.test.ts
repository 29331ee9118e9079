import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../support/database.js'

// As the migration guide gives it (through the umbrella, which re-exports the core's interface;
// test/consumer proves it in a pnpm install, where the core is not the app's to name).
declare module 'fastify-pg-pool' {
  interface PgPoolInstances {
    reporting: true
  }
}

// Issue 19: a team on @fastify/postgres registers a second database. Named instances: each its
// own pool, `app.dbs.<name>`, `request.dbs.<name>`, or `request.db` on routes that choose it.

let main: TestDatabase
let reporting: TestDatabase
let app: FastifyInstance | undefined
const names = { main: uniqueName('main'), reporting: uniqueName('reporting') }

beforeAll(async () => {
  main = await createTestDatabase()
  reporting = await createTestDatabase()
  await main.sql`create table which (name text)`
  await main.sql`insert into which values ('main')`
  await reporting.sql`create table which (name text)`
  await reporting.sql`insert into which values ('reporting')`
  await reporting.sql`create table reads (id serial primary key)`
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(async () => {
  await main.drop()
  await reporting.drop()
})

async function twoInstances(): Promise<FastifyInstance> {
  const instance = Fastify()
  await instance.register(pgPoolCore, { connection: main.url, pool: { max: 2, applicationName: names.main } })
  await instance.register(pgPoolCore, {
    name: 'reporting',
    connection: reporting.url,
    pool: { max: 3, applicationName: names.reporting },
  })
  return instance
}

describe('named instances', () => {
  test('request.db, request.dbs.<name>, config.db.instance and app.dbs.<name> reach their own database', async () => {
    app = await twoInstances()
    app.get('/both', async (request) => {
      const [own] = await request.db`select name from which`
      const [other] = await request.dbs.reporting`select name from which`
      return { own: own?.name, other: other?.name }
    })
    app.get('/routed', { config: { db: { instance: 'reporting' } } }, async (request) => {
      const [row] = await request.db`select name from which`
      return row
    })
    app.post('/routed-tx', { config: { db: { transaction: true, instance: 'reporting' } } }, async (request) => {
      await request.db`insert into reads default values`
      return { ok: true }
    })
    expect((await app.inject('/both')).json()).toEqual({ own: 'main', other: 'reporting' })
    expect((await app.inject('/routed')).json()).toEqual({ name: 'reporting' })
    expect((await app.inject({ method: 'POST', url: '/routed-tx' })).statusCode).toBe(200)
    expect(await reporting.sql`select count(*)::int as n from reads`).toEqual([{ n: 1 }])
    const [pool] = await app.dbs.reporting`select name from which`
    expect(pool?.name).toBe('reporting')
    const [dflt] = await app.db`select name from which`
    expect(dflt?.name).toBe('main')
  })

  test('each instance has its own pool: its max, its connections, its view and label', async () => {
    app = await twoInstances()
    const views = app.pgPools.all()
    expect(views.map((view) => [view.name, view.instance, view.role])).toEqual([
      ['primary', undefined, 'primary'],
      ['reporting', 'reporting', 'primary'],
    ])
    expect(app.pgPools.get()).toBe(app.pgPool)
    expect(app.pgPools.get('reporting')?.options.max).toBe(3)
    app.get('/hold', async (request) => {
      await Promise.all([request.db`select pg_sleep(0.2)`, request.dbs.reporting`select pg_sleep(0.2)`])
      return 'ok'
    })
    await app.ready()
    const current = app
    const held = Array.from({ length: 6 }, () => current.inject('/hold'))
    // Each pool fills to its own max (the reporting pool opens its connections on demand: on a
    // loaded machine it can reach 3 after the default pool reached 2).
    await waitUntil(() => current.pgPool.stats().leased === 2, 'the default pool at its max')
    await waitUntil(() => current.pgPools.get('reporting')?.stats().leased === 3, 'the reporting pool at its max')
    expect(current.pgPool.stats()).toMatchObject({ leased: 2, open: 2 })
    expect(app.pgPools.get('reporting')?.stats()).toMatchObject({ leased: 3, open: 3 })
    expect(await main.countConnections(names.main)).toBeLessThanOrEqual(2)
    expect(await reporting.countConnections(names.reporting)).toBeLessThanOrEqual(3)
    expect((await Promise.all(held)).map((r) => r.statusCode)).toEqual(Array(6).fill(200))
    await waitUntil(
      () => current.pgPools.all().every((view) => view.stats().leased === 0),
      'every lease of both instances back',
    )
  })

  test('a lease on another instance comes back with the request, also when the client hangs up', async () => {
    app = await twoInstances()
    app.get('/other', async (request) => request.dbs.reporting`select 1 as one`)
    await app.ready()
    const current = app
    expect((await current.inject('/other')).statusCode).toBe(200)
    await waitUntil(() => current.pgPools.get('reporting')?.stats().leased === 0, 'the reporting lease back')
    expect(app.pgPool.stats().open).toBe(1) // the default instance's start-up check only
  })

  test('unknown instances and duplicate registrations are coded errors', async () => {
    app = await twoInstances()
    app.get('/nowhere', { config: { db: { instance: 'nowhere' } } }, async (request) => request.db`select 1`)
    app.get('/dbs-nowhere', async (request) => String(request.dbs.nowhere))
    const nowhere = await app.inject('/nowhere')
    expect(nowhere.statusCode).toBe(500)
    expect(nowhere.json().code).toBe('FST_PG_POOL_UNKNOWN_INSTANCE')
    expect((await app.inject('/dbs-nowhere')).body).toBe('undefined')
    const again = Fastify()
    await again.register(pgPoolCore, { connection: main.url, pool: { lazy: true } })
    await expect(again.register(pgPoolCore, { connection: main.url, pool: { lazy: true } })).rejects.toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining('give this one a name'),
    })
    await again.close()
    const dup = Fastify()
    await dup.register(pgPoolCore, { name: 'x', connection: main.url, pool: { lazy: true } })
    await expect(
      dup.register(pgPoolCore, { name: 'x', connection: main.url, pool: { lazy: true } }),
    ).rejects.toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
    await dup.close()
    const bad = Fastify()
    await expect(bad.register(pgPoolCore, { name: 'primary', connection: main.url })).rejects.toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
    })
    await bad.close()
  })

  // A replica's pool is labelled `replica-<i>` (`<name>-replica-<i>` for a named instance): an
  // instance named like that was accepted, and /metrics series and /health components of the
  // two pools overwrote each other.
  for (const [first, second, clash] of [
    [{ replicas: true }, { name: 'replica-0' }, 'replica-0'],
    [{ name: 'replica-0' }, { replicas: true }, 'replica-0'],
    [{ name: 'x', replicas: true }, { name: 'x-replica-0' }, 'x-replica-0'],
    [{ name: 'x-replica-0' }, { name: 'x', replicas: true }, 'x-replica-0'],
  ] as const) {
    test(`an instance whose pool label is taken is refused: ${JSON.stringify(first)} then ${JSON.stringify(second)}`, async () => {
      app = Fastify()
      const register = (instance: { name?: string; replicas?: boolean }) =>
        app?.register(pgPoolCore, {
          ...(instance.name === undefined ? {} : { name: instance.name as never }),
          connection: main.url,
          ...(instance.replicas ? { replicas: [main.url] } : {}),
          pool: { lazy: true, max: 1 },
        })
      await register(first)
      const refusal = await register(second)?.then(
        () => 'registered',
        (error: unknown) => error,
      )
      expect(refusal).toMatchObject({
        code: 'FST_PG_POOL_INVALID_OPTION',
        message: expect.stringContaining(`"${clash}"`),
      })
      const labels = app.pgPools.all().map((view) => view.name)
      expect(labels).toEqual([...new Set(labels)])
    })
  }

  test('a named instance alone: request.db refuses on routes that do not choose it', async () => {
    app = Fastify()
    await app.register(pgPoolCore, { name: 'reporting', connection: reporting.url, pool: { max: 1 } })
    app.get('/default', async (request) => request.db`select 1`)
    app.get(
      '/chosen',
      { config: { db: { instance: 'reporting' } } },
      async (request) => (await request.db`select name from which`)[0],
    )
    expect((await app.inject('/default')).json().code).toBe('FST_PG_POOL_UNKNOWN_INSTANCE')
    expect((await app.inject('/chosen')).json()).toEqual({ name: 'reporting' })
  })
})

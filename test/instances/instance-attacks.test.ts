import { spawn } from 'node:child_process'
import fastifyPostgres from '@fastify/postgres'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'

// Attacks on named instances that held (passed on the current code), kept as coverage.

let main: TestDatabase
let other: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  main = await createTestDatabase()
  other = await createTestDatabase()
  for (const [db, name] of [
    [main, 'main'],
    [other, 'other'],
  ] as const) {
    await db.sql`create table which (name text)`
    await db.sql`insert into which values (${name})`
    await db.sql`create table t (id int primary key)`
  }
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await main.sql`truncate t`
  await other.sql`truncate t`
})
afterAll(async () => {
  await main.drop()
  await other.drop()
})

type Sql = (strings: TemplateStringsArray, ...values: unknown[]) => Promise<Record<string, unknown>[]>

describe('named instances: held', () => {
  test('odd but valid names (63 chars, then, toString, hasOwnProperty, db, dbs, replica, default) reach their own database', async () => {
    for (const name of ['x'.repeat(63), 'then', 'toString', 'hasOwnProperty', 'db', 'dbs', 'replica', 'default']) {
      const current = Fastify()
      app = current
      await current.register(pgPoolCore, { connection: main.url, pool: { max: 1 } })
      await current.register(pgPoolCore, { name, connection: other.url, pool: { max: 1 } })
      current.get(
        '/dbs',
        async (request) =>
          (await ((request.dbs as unknown as Record<string, Sql>)[name] as Sql)`select name from which`)[0],
      )
      current.get(
        '/routed',
        { config: { db: { instance: name } } },
        async (request) => (await request.db`select name from which`)[0],
      )
      current.get('/default', async (request) => (await request.db`select name from which`)[0])
      expect((await current.inject('/dbs')).json(), name).toEqual({ name: 'other' })
      expect((await current.inject('/routed')).json(), name).toEqual({ name: 'other' })
      expect((await current.inject('/default')).json(), name).toEqual({ name: 'main' })
      expect(Object.keys(current.dbs)).toEqual([name])
      expect(current.pgPools.all().map((view) => view.name)).toEqual(['primary', name])
      await current.close()
      app = undefined
    }
  })

  test('invalid names are coded errors at register: empty, unicode, 64 chars, __proto__, constructor, prototype, primary, a number', async () => {
    for (const name of [
      '',
      'héllo',
      'x'.repeat(64),
      '__proto__',
      'constructor',
      'prototype',
      'primary',
      5,
      '1abc',
      'a b',
    ]) {
      const current = Fastify()
      await current.register(pgPoolCore, { connection: main.url, pool: { lazy: true } })
      const error = await current
        .register(pgPoolCore, { name: name as never, connection: other.url, pool: { lazy: true } })
        .then(
          () => undefined,
          (e: { code?: string; message?: string }) => e,
        )
      expect(error?.code, String(name)).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(error?.message).toMatch(/^Invalid option name: /)
      await current.close()
    }
  })

  test('a route transaction on a named instance: a 409 without a throw rolls back; request.dbs.<name> is in it; a swallowed error is a 500; begin() inside is NESTED', async () => {
    app = Fastify()
    await app.register(pgPoolCore, { connection: main.url, pool: { max: 1 } })
    await app.register(pgPoolCore, { name: 'other', connection: other.url, pool: { max: 1 } })
    const dbs = (request: { dbs: unknown }) =>
      request.dbs as Record<string, Sql & { begin: (cb: (sql: Sql) => unknown) => Promise<unknown> }>
    app.post('/conflict', { config: { db: { transaction: true, instance: 'other' } } }, async (request, reply) => {
      await request.db`insert into t values (1)`
      await (dbs(request).other as Sql)`insert into t values (2)`
      return reply.code(409).send({ message: 'no' })
    })
    app.post('/swallowed', { config: { db: { transaction: true, instance: 'other' } } }, async (request) => {
      await request.db`insert into t values (3)`
      try {
        await (dbs(request).other as Sql)`insert into t values (3)`
      } catch {}
      return { ok: true }
    })
    app.post('/nested', { config: { db: { transaction: true, instance: 'other' } } }, async (request) =>
      dbs(request).other?.begin(async (sql) => sql`select 1`),
    )
    app.post('/ok', { config: { db: { transaction: true, instance: 'other' } } }, async (request) => {
      await request.db`insert into t values (4)`
      await (dbs(request).other as Sql)`insert into t values (5)`
      return { ok: true }
    })
    expect((await app.inject({ method: 'POST', url: '/conflict' })).statusCode).toBe(409)
    const swallowed = await app.inject({ method: 'POST', url: '/swallowed' })
    expect([swallowed.statusCode, swallowed.json().code]).toEqual([500, 'FST_PG_POOL_COMMIT_FAILED'])
    const nested = await app.inject({ method: 'POST', url: '/nested' })
    expect([nested.statusCode, nested.json().code]).toEqual([500, 'FST_PG_POOL_NESTED_TRANSACTION'])
    expect((await app.inject({ method: 'POST', url: '/ok' })).statusCode).toBe(200)
    expect(await other.sql`select id from t order by id`).toEqual([{ id: 4 }, { id: 5 }])
    expect(await main.sql`select id from t`).toEqual([])
    const current = app
    await waitFor(() => current.pgPools.all().every((view) => view.stats().leased === 0))
    expect(current.pgPools.all().map((view) => view.stats().leased)).toEqual([0, 0])
  })

  test('default and named instances in two sibling encapsulated plugins (core only): each reaches both', async () => {
    app = Fastify()
    const both = async (request: { db: Sql; dbs: unknown }) => ({
      d: (await request.db`select name from which`)[0],
      o: (await ((request.dbs as Record<string, Sql>).other as Sql)`select name from which`)[0],
    })
    app.register(async (child) => {
      await child.register(pgPoolCore, { connection: main.url, pool: { max: 1 } })
      child.get('/a', async (request) => both(request as never))
    })
    app.register(async (child) => {
      await child.register(pgPoolCore, { name: 'other', connection: other.url, pool: { max: 1 } })
      child.get('/b', async (request) => both(request as never))
    })
    await app.ready()
    const expected = { d: { name: 'main' }, o: { name: 'other' } }
    expect((await app.inject('/a')).json()).toEqual(expected)
    expect((await app.inject('/b')).json()).toEqual(expected)
  })

  test('@fastify/postgres registered in the same app (a gradual migration): no decorator clash, both answer', async () => {
    app = Fastify()
    await app.register(fastifyPostgres, { connectionString: main.directUrl })
    await app.register(fastifyPostgres, { name: 'other', connectionString: other.directUrl })
    await app.register(pgPool, { connection: main.url, pool: { max: 1 } })
    await app.register(pgPool, { name: 'other', connection: other.url, pool: { max: 1 } })
    const current = app
    app.get('/x', async (request) => ({
      a: (await request.db`select name from which`)[0],
      b: (await (request.dbs.other as unknown as Sql)`select name from which`)[0],
      c: (await current.pg.query('select name from which')).rows[0],
      d: (await current.pg.other?.query('select name from which'))?.rows[0],
    }))
    expect((await app.inject('/x')).json()).toEqual({
      a: { name: 'main' },
      b: { name: 'other' },
      c: { name: 'main' },
      d: { name: 'other' },
    })
    expect((await app.inject('/health/ready')).statusCode).toBe(200)
  })

  test('close with a named instance in a child plugin, LISTEN on both, health and metrics: no backend left, the process exits by itself', async () => {
    const appName = uniqueName('probe-close')
    const child = spawn(
      process.execPath,
      [new URL('./close-child.mjs', import.meta.url).pathname, main.url, other.url, appName],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
        cwd: process.cwd(),
      },
    )
    let out = ''
    let err = ''
    child.stdout.on('data', (chunk) => {
      out += String(chunk)
    })
    child.stderr.on('data', (chunk) => {
      err += String(chunk)
    })
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    try {
      expect(await waitFor(() => out.includes('ready'), 20_000), err).toBe(true)
      expect(await main.countConnections(`${appName}/listen`)).toBe(1)
      expect(await other.countConnections(`${appName}/listen`)).toBe(1)
      child.stdin.write('close\n')
      expect(await waitFor(() => out.includes('closed'), 20_000), err).toBe(true)
      const code = await Promise.race([
        exited,
        new Promise((resolve) => setTimeout(() => resolve('still running'), 15_000)),
      ])
      expect(code, err).toBe(0)
      const left = async () =>
        (await main.countConnections(appName)) +
        (await other.countConnections(appName)) +
        (await main.countConnections(`${appName}/listen`)) +
        (await other.countConnections(`${appName}/listen`))
      expect(await waitFor(async () => (await left()) === 0, 5_000)).toBe(true)
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL')
    }
  }, 60_000)
})

// HELD (probe-errors): a sweep of the suite's coded errors through HTTP on the umbrella (core,
// health, metrics, backpressure together), each met the way a user meets it: the status the
// README's table gives, `code` in the body, `Retry-After` exactly on the retryable codes (an
// integer of seconds), the error an instance of the umbrella's `errors` constructor of its code,
// Fastify's log line for a 5xx at `error` (never below warn), and no host, port, database name,
// user or query parameter in the body. Also: hostile `errorMapping` values are refused at
// register (a function, NaN, 2xx/1xx, huge, a string, a circular object), a class and a code
// entry that disagree resolve code-first, and app error handlers that rethrow, send twice or
// answer 200 leave the route transaction, the begin() block and the pipelined route rolled back
// with no lease held, in every route kind.
import { Writable } from 'node:stream'
import type { RequestDb, RouteDbConfig } from '@fastify-pg-pool/core'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { errors, pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
let app: FastifyInstance | undefined
const SECRET = 'probe-errors-secret-value'
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table d (email text unique deferrable initially deferred);
    create table note (body text primary key);
    insert into note values ('dup');
  `)
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db?.drop())

const retryable = new Set([
  'FST_PG_POOL_ACQUIRE_TIMEOUT',
  'FST_PG_POOL_QUEUE_FULL',
  'FST_PG_POOL_CLOSED',
  'FST_PG_POOL_CONNECT_FAILED',
  'FST_PG_POOL_CONNECTION_LOST',
  'FST_PG_POOL_QUERY_TIMEOUT',
  'FST_PG_POOL_NOT_PRIMARY',
  'FST_PG_POOL_COMMIT_UNKNOWN',
  'FST_PG_POOL_OVERLOADED',
  'FST_PG_POOL_PROCESS_PRESSURE',
])

let saved: RequestDb | undefined

describe('the coded errors through HTTP (umbrella)', () => {
  test('status, code, Retry-After, constructor, log level, no secret in the body', async () => {
    const logs: Record<string, unknown>[] = []
    const stream = new Writable({
      write(chunk, _encoding, callback) {
        for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line))
        callback()
      },
    })
    const server = Fastify({ logger: { level: 'trace', stream } })
    app = server
    await server.register(pgPool, { connection: db.url, pool: { max: 2, maxWaiting: 0 } })
    const caught = new Map<string, unknown>()
    server.addHook('onError', async (request, _reply, error) => {
      caught.set(request.url, error)
    })
    server.get('/opted', { config: { db: false } }, async (request) => request.db`select ${SECRET}`)
    server.get('/pipe-begin', { config: { db: { pipeline: true } } }, async (request) =>
      request.db.begin((t) => t`select ${SECRET}`),
    )
    server.get('/nested', { config: { db: { transaction: true } } }, async (request) =>
      request.db.begin((t) => t`select ${SECRET}`),
    )
    server.get('/outside', async (request) => request.db.begin(async () => request.db`select ${SECRET}`))
    server.get('/ended', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`commit`
      return request.db`select ${SECRET}`
    })
    server.get('/unknown', { config: { db: { instance: 'nope' } } }, async (request) => request.db`select 1`)
    server.get('/save', async (request) => {
      saved = request.db
      await request.db`select 1`
      return {}
    })
    server.get('/released', async () => (saved as RequestDb)`select ${SECRET}`)
    server.get('/commit-failed', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into d values (${SECRET}), (${SECRET})`
      return { ok: true }
    })
    server.get('/query-timeout', async (request) => {
      await request.db`set statement_timeout = 50`
      return request.db`select pg_sleep(2), ${SECRET}::text`
    })
    server.get('/lost', async (request) => request.db`select pg_terminate_backend(pg_backend_pid()), ${SECRET}::text`)
    const cases: [string, string, number][] = [
      ['/opted', 'FST_PG_POOL_ROUTE_OPTED_OUT', 500],
      ['/pipe-begin', 'FST_PG_POOL_PIPELINED', 500],
      ['/nested', 'FST_PG_POOL_NESTED_TRANSACTION', 500],
      ['/outside', 'FST_PG_POOL_OUTSIDE_BLOCK', 500],
      ['/ended', 'FST_PG_POOL_TRANSACTION_ENDED', 500],
      ['/unknown', 'FST_PG_POOL_UNKNOWN_INSTANCE', 500],
      ['/released', 'FST_PG_POOL_RELEASED', 500],
      ['/commit-failed', 'FST_PG_POOL_COMMIT_FAILED', 500],
      ['/query-timeout', 'FST_PG_POOL_QUERY_TIMEOUT', 503],
      ['/lost', 'FST_PG_POOL_CONNECTION_LOST', 503],
    ]
    expect((await server.inject('/save')).statusCode).toBe(200)
    const url = new URL(db.url)
    const secrets = [SECRET, url.hostname, `:${url.port}`, url.pathname.slice(1), url.username]
    for (const [path, code, status] of cases) {
      logs.length = 0
      const response = await server.inject(path)
      expect(response.statusCode, path).toBe(status)
      const body = response.json()
      expect(body.code, path).toBe(code)
      expect(body.statusCode, path).toBe(status)
      for (const secret of secrets) expect(response.body, `${path}: ${secret}`).not.toContain(secret)
      const retryAfter = response.headers['retry-after']
      if (retryable.has(code)) expect(String(retryAfter), path).toMatch(/^[1-9][0-9]*$/)
      else expect(retryAfter, path).toBeUndefined()
      const error = caught.get(path)
      const ctor = (errors as unknown as Record<string, (new () => Error) | undefined>)[code] as new () => Error
      expect(ctor, path).toBeDefined()
      expect(error instanceof ctor, path).toBe(true)
      const levels = logs.filter((line) => line.err !== undefined).map((line) => line.level)
      expect(levels, path).toEqual([50])
      expect(JSON.stringify(logs), path).not.toContain(SECRET)
    }
    expect(server.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
  })
})

describe('hostile errorMapping values', () => {
  const circular: Record<string, unknown> = {}
  circular.self = circular
  const values: [string, unknown][] = [
    ['a function', () => 409],
    ['NaN', Number.NaN],
    ['a 2xx', 200],
    ['a 1xx', 101],
    ['a 3xx', 302],
    ['huge', 1e9],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['a numeric string', '409'],
    ['a fraction', 409.5],
    ['a circular object', circular],
    ['null', null],
  ]
  for (const [name, status] of values) {
    test(`${name} as a status is refused at register, naming the entry`, async () => {
      const server = Fastify()
      const outcome = await server
        .register(pgPoolCore, {
          connection: db.url,
          pool: { lazy: true },
          errorMapping: { '23505': status } as never,
        })
        .ready()
        .then(
          () => undefined,
          (error: unknown) => error as { code?: string; message?: string },
        )
      await server.close()
      expect(outcome?.code).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(outcome?.message).toContain('errorMapping.23505')
    })
  }

  test('a class and a code that disagree: the code wins for itself, the class for the rest', async () => {
    app = Fastify()
    await app.register(pgPoolCore, {
      connection: db.url,
      pool: { max: 2 },
      errorMapping: { '23': 422, '23505': 409, '40': 429 },
    })
    app.post('/dup', async (request) => request.db`insert into note values ('dup')`)
    app.post('/null', async (request) => request.db`insert into note values (null)`)
    app.get(
      '/serialization',
      async (request) => request.db`do $$ begin raise exception 'x' using errcode = '40001'; end $$`,
    )
    const dup = await app.inject({ method: 'POST', url: '/dup' })
    expect([dup.statusCode, dup.json().code]).toEqual([409, '23505'])
    const missing = await app.inject({ method: 'POST', url: '/null' })
    expect([missing.statusCode, missing.json().code]).toEqual([422, '23502'])
    const serialization = await app.inject('/serialization')
    // The user's class wins over the defaults' 40001 -> 503; a 429 gets no Retry-After from the pool.
    expect([serialization.statusCode, serialization.json().code]).toEqual([429, '40001'])
  })
})

describe('a SQLSTATE the app maps to 503', () => {
  test("gets Retry-After: the pool's retryAfter, in whole seconds, in every route kind", async () => {
    app = Fastify()
    await app.register(pgPoolCore, {
      connection: db.url,
      pool: { max: 2, retryAfter: 7 },
      errorMapping: { '55P03': 503 },
    })
    const raise = "do $$ begin raise exception 'busy' using errcode = '55P03'; end $$"
    app.get('/plain', async (request) => request.db.unsafe(raise))
    app.get('/transaction', { config: { db: { transaction: true } } }, async (request) => request.db.unsafe(raise))
    app.get('/pipelined', { config: { db: { pipeline: true } } }, async (request) => request.db.unsafe(raise))
    app.get('/block', async (request) => request.db.begin((t) => t.unsafe(raise)))
    for (const url of ['/plain', '/transaction', '/pipelined', '/block']) {
      const response = await app.inject(url)
      expect([response.statusCode, response.json().code], url).toEqual([503, '55P03'])
      expect(response.headers['retry-after'], url).toBe('7')
    }
  })
})

describe("an app's error handler, in every route kind", () => {
  type Install = (server: FastifyInstance) => void
  const handlers: [string, Install][] = [
    [
      'rethrows',
      (server) =>
        server.setErrorHandler((error) => {
          throw error
        }),
    ],
    [
      'throws its own error',
      (server) =>
        server.setErrorHandler(() => {
          throw new Error('the handler failed')
        }),
    ],
    [
      'sends twice',
      (server) =>
        server.setErrorHandler(async (_error, _request, reply) => {
          reply.code(409).send({ first: true })
          return { second: true }
        }),
    ],
    ['answers 200', (server) => server.setErrorHandler(async (_error, _request, reply) => reply.code(200).send({}))],
  ]
  const kinds: [string, RouteDbConfig, boolean][] = [
    ['route transaction', { transaction: true }, false],
    ['pipelined', { pipeline: true }, false],
    ['begin() block', { transaction: false }, true],
  ]
  for (const [handlerName, install] of handlers) {
    for (const [kindName, config, block] of kinds) {
      test(`${handlerName}, ${kindName}: nothing of the failed work committed, no lease held`, async () => {
        await db.sql`delete from note where body <> 'dup'`
        const server = Fastify()
        app = server
        await server.register(pgPoolCore, { connection: db.url, pool: { max: 2 } })
        install(server)
        server.post('/w', { config: { db: config } }, async (request) => {
          if (block) {
            return request.db.begin(async (t) => {
              await t`insert into note values ('half')`
              await t`insert into note values ('dup')`
            })
          }
          // A pipelined route has no transaction: its one statement fails alone.
          if (!(config as { pipeline?: boolean }).pipeline) await request.db`insert into note values ('half')`
          await request.db`insert into note values ('dup')`
          return { ok: true }
        })
        await server.inject({ method: 'POST', url: '/w' })
        const rows = await db.sql<{ body: string }[]>`select body from note order by body`
        expect(rows.map((row) => row.body)).toEqual(['dup'])
        expect(server.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
      })
    }
  }
})

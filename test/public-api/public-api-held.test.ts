import { readFileSync } from 'node:fs'
import * as backpressure from '@fastify-pg-pool/backpressure'
import * as core from '@fastify-pg-pool/core'
import * as metrics from '@fastify-pg-pool/metrics'
import * as otel from '@fastify-pg-pool/otel'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool, { errors } from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Hostile probing (types and migration): what held. The run-time side of what the declarations
// promise (members present or absent on each handle, the view's shapes), the README error tables
// against the exported constructors, and migration patterns from @fastify/postgres that the guide
// implies (savepoints to survive an expected error in a route transaction, SQL transactions on a
// lease, `$1` SQL through unsafe with rows.count, request.dbs.<name> on an instance route).

let db: TestDatabase
let reporting: TestDatabase
let app: FastifyInstance
const seen: Record<string, Record<string, string>> = {}

const members = [
  'unsafe',
  'notify',
  'array',
  'file',
  'json',
  'typed',
  'types',
  'begin',
  'savepoint',
  'transaction',
  'lease',
  'listen',
  'release',
  'end',
  'reserve',
  'subscribe',
  'options',
  'largeObject',
]
const shape = (handle: unknown) =>
  Object.fromEntries(members.map((name) => [name, typeof (handle as Record<string, unknown>)[name]]))
const present = (names: string[]) =>
  Object.fromEntries(members.map((name) => [name, names.includes(name) ? 'function' : 'undefined']))
const query = ['unsafe', 'notify', 'array', 'file', 'json', 'typed', 'types']

beforeAll(async () => {
  ;[db, reporting] = await Promise.all([createTestDatabase(), createTestDatabase()])
  for (const target of [db, reporting]) {
    await target.sql`create table users (id serial primary key, username text not null unique)`
    await target.sql`create table audit (id serial primary key, event text not null)`
    await target.sql`insert into users (username) values ('ada'), ('grace')`
  }
  app = Fastify()
  await app.register(pgPool, {
    connection: db.url,
    pool: { max: 3, pgbouncer: db.viaBouncer },
    backpressure: false,
    onLease: async (_request, leaseDb) => {
      seen.onLease = shape(leaseDb)
    },
  })
  await app.register(pgPool, {
    name: 'reporting',
    connection: reporting.url,
    pool: { pgbouncer: reporting.viaBouncer },
  })
  app.get('/shapes', async (request) => {
    await request.db`select 1`
    seen.request = shape(request.db)
    await request.db.begin(async (tx) => {
      seen.begin = shape(tx)
      await tx.savepoint(async (sp) => {
        seen.savepoint = shape(sp)
      })
    })
    return {}
  })
  app.post('/savepoint', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into audit (event) values ('savepoint')`
    let duplicate = ''
    try {
      await request.db.savepoint(async (sp) => {
        await sp`insert into users (id, username) values (1, 'again')`
      })
    } catch (error) {
      duplicate = (error as { code?: string }).code ?? ''
    }
    await request.db`insert into audit (event) values ('savepoint-after')`
    return { duplicate }
  })
  app.post('/begin-savepoint', async (request) =>
    request.db.begin(async (tx) => {
      await tx`insert into audit (event) values ('begin-savepoint')`
      await tx.savepoint(async (sp) => sp`insert into users (id, username) values (1, 'again')`).catch(() => {})
      return { ok: true }
    }),
  )
  app.post('/rowcount', async (request) => {
    const rows = await request.db.unsafe('UPDATE users SET username = username WHERE id = any($1)', [[1, 2]])
    return { count: rows.count, command: rows.command, length: rows.length }
  })
  app.post('/reporting', { config: { db: { transaction: true, instance: 'reporting' } } }, async (request, reply) => {
    const same = request.dbs.reporting === request.db
    const named = request.dbs.reporting
    if (named) await named`insert into audit (event) values ('reporting')`
    return reply.code(409).send({ same })
  })
  await app.ready()
})
afterAll(async () => {
  await app?.close()
  await Promise.all([db?.drop(), reporting?.drop()])
})

describe('the members the declarations promise, and those they refuse, at run time', () => {
  test('request.db, begin and savepoint handles, onLease db: the query API, begin, savepoint; no end/listen/release', async () => {
    expect((await app.inject('/shapes')).statusCode).toBe(200)
    const lease = present([...query, 'begin', 'savepoint'])
    expect(seen).toMatchObject({ request: lease, begin: lease, savepoint: lease, onLease: lease })
  })

  test('app.db: the query API, begin, transaction, lease, listen; a lease: release, no listen', async () => {
    expect(shape(app.db)).toEqual(present([...query, 'begin', 'transaction', 'lease', 'listen']))
    expect(shape(app.dbs.reporting)).toEqual(present([...query, 'begin', 'transaction', 'lease', 'listen']))
    const lease = await app.db.lease()
    try {
      expect(shape(lease)).toEqual(present([...query, 'begin', 'savepoint', 'release']))
    } finally {
      await lease.release()
    }
    expect(app.db.replica).toBeUndefined() // typed optional: present only with replicas
  })

  test("the view's shapes are the declared ones; on() chains", () => {
    const view = app.pgPool
    expect(view.on('close', () => {})).toBe(view)
    expect(Object.keys(view.stats()).sort()).toEqual(
      [
        'max',
        'open',
        'connecting',
        'idle',
        'leased',
        'shared',
        'pipelined',
        'sharedQueries',
        'waiting',
        'maxWaiting',
        'waitingCap',
        'oldestWaitMs',
        'accepting',
      ].sort(),
    )
    expect(Object.keys(view.options).sort()).toEqual(
      [
        'max',
        'acquireTimeout',
        'maxWaiting',
        'idleTimeout',
        'maxLifetime',
        'maxPreparedStatements',
        'connectTimeout',
        'statementTimeout',
        'leakDetectionThreshold',
        'closeTimeout',
        'applicationName',
        'pgbouncer',
        'sessionReset',
        'retryAfter',
        'lazy',
        'instances',
        'pipelineDepth',
      ].sort(),
    )
    expect(Object.keys(view.listener()).sort()).toEqual(
      ['listeners', 'channels', 'connected', 'notifications', 'reconnections'].sort(),
    )
    expect(Object.keys(view.endpoint).sort()).toEqual(['database', 'host', 'port'])
    expect(app.pgPools.get()).toBe(view)
    expect(app.pgPools.get('reporting')?.instance).toBe('reporting')
  })
})

describe('errors: every code of each README table is exported, with its status', () => {
  const packages: [string, Record<string, new () => { code: string; statusCode: number }>][] = [
    ['core', core.errors],
    ['metrics', metrics.errors],
    ['backpressure', backpressure.errors],
    ['otel', otel.errors],
  ]
  test.each(packages)('%s', (name, own) => {
    const readme = readFileSync(new URL(`../../packages/${name}/README.md`, import.meta.url), 'utf8')
    const rows = [...readme.matchAll(/^\|\s*`(FST_PG_POOL_[A-Z_]+)`\s*\|\s*(\d{3})/gm)].map((m) => [m[1], Number(m[2])])
    expect(rows.length).toBeGreaterThan(0)
    for (const [code, status] of rows) {
      const Own = own[code as string]
      const Umbrella = (errors as unknown as Record<string, new () => { code: string; statusCode: number }>)[
        code as string
      ]
      expect({ code, own: Own && new Own().statusCode, umbrella: Umbrella && new Umbrella().statusCode }).toEqual({
        code,
        own: status,
        umbrella: status,
      })
    }
    expect(Object.keys(own).sort()).toEqual(rows.map(([code]) => code).sort())
  })

  test('an error the pool raises is an instance of the exported constructor', async () => {
    const lease = await app.db.lease()
    await lease.release()
    const error = await lease`select 1`.then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(errors.FST_PG_POOL_RELEASED)
    expect(error).toBeInstanceOf(core.errors.FST_PG_POOL_RELEASED)
  })
})

describe('migration patterns from @fastify/postgres', () => {
  test('an expected error caught in a savepoint: the route transaction commits the rest', async () => {
    const response = await app.inject({ method: 'POST', url: '/savepoint' })
    expect([response.statusCode, response.json()]).toEqual([200, { duplicate: '23505' }])
    const events = await db.sql`select event from audit where event like 'savepoint%' order by id`
    expect(events.map((row) => row.event)).toEqual(['savepoint', 'savepoint-after'])
  })

  test('the same inside request.db.begin()', async () => {
    const response = await app.inject({ method: 'POST', url: '/begin-savepoint' })
    expect([response.statusCode, response.json()]).toEqual([200, { ok: true }])
    expect(await db.sql`select event from audit where event = 'begin-savepoint'`).toHaveLength(1)
  })

  test('client.query("BEGIN") ... "COMMIT" on app.db.lease(); a lease released inside BEGIN rolls back', async () => {
    const lease = await app.db.lease()
    try {
      await lease`begin`
      await lease`insert into audit (event) values ('manual')`
      await lease`commit`
    } finally {
      await lease.release()
    }
    const open = await app.db.lease()
    await open`begin`
    await open`insert into audit (event) values ('left-open')`
    await open.release()
    const events = await db.sql`select event from audit where event in ('manual', 'left-open')`
    expect(events.map((row) => row.event)).toEqual(['manual'])
  })

  test('`$1` SQL through unsafe(text, values): rows.count is pg’s rowCount', async () => {
    const response = await app.inject({ method: 'POST', url: '/rowcount' })
    expect(response.json()).toEqual({ count: 2, command: 'UPDATE', length: 0 })
  })

  test('request.dbs.<name> on a route with instance <name> is request.db, and a 409 rolls it back', async () => {
    const response = await app.inject({ method: 'POST', url: '/reporting' })
    expect([response.statusCode, response.json()]).toEqual([409, { same: true }])
    expect(await reporting.sql`select event from audit where event = 'reporting'`).toHaveLength(0)
  })
})

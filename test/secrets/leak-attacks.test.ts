import { randomBytes } from 'node:crypto'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'
import { Witness } from '../support/witness.js'

// Hostile probing, attacks that held (pass on the current code), not covered elsewhere:
// parameter values through every query form and error path (bodies and trace-level logs), row
// data in a deferred trigger's COMMIT failure, onLease errors, a DNS failure in health and
// metrics, a replica's password and the read-your-writes secret, bad option values refused
// coded without the password.

let db: TestDatabase
const witness = new Witness()
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table users (id serial primary key, email text unique not null, age int check (age > 0));
    create function reject_row() returns trigger language plpgsql as
      $f$ begin raise exception 'rejected row %', new.email; end $f$;
    create table audited (email text);
    create constraint trigger audited_check after insert on audited
      deferrable initially deferred for each row execute function reject_row();
    create table parent (id int primary key);
    create table child (parent_id int references parent deferrable initially deferred);
  `)
})
afterEach(() => witness.closeApps())
afterAll(() => db.drop())

describe('parameter values stay out of bodies and trace-level logs', () => {
  test('through every query form, and through COMMIT failures that quote row data', async () => {
    const secret = `sv${randomBytes(6).toString('hex')}`
    const number = 700_000_000 + Math.floor(Math.random() * 90_000_000)
    const { app, lines } = witness.loggedApp()
    await app.register(pgPool, {
      connection: db.url,
      health: { details: 'full' },
      pool: { applicationName: 'held-forms' },
    })
    const routes: Record<string, (request: { db: import('fastify').FastifyRequest['db'] }) => Promise<unknown>> = {
      begin: (r) => r.db.begin((t) => t`select ${secret}::int`),
      savepoint: (r) => r.db.begin((t) => t.savepoint((s) => s`select ${secret}::regclass`)),
      cursor: async (r) => {
        for await (const rows of r.db`select ${secret}::int`.cursor(1)) void rows
      },
      forEach: (r) => r.db`select ${secret}::int`.forEach(() => {}),
      json: (r) => r.db`select ${r.db.json({ v: secret })}::int`,
      array: (r) => r.db`select ${r.db.array([secret])}::int[]`,
      unsafe: (r) => r.db.unsafe('select $1::int', [secret]),
      values: (r) => r.db`select ${secret}::uuid`.values(),
      duplicate: async (r) => {
        await r.db`insert into users (email) values (${secret})`
        return r.db`insert into users (email) values (${secret})`
      },
      check: (r) => r.db`insert into users (email, age) values (${`c${secret}`}, ${-number})`,
      appDb: () => app.db`select ${secret}::int`,
      appDbTransaction: () => app.db.transaction((t) => t`select ${secret}::int`),
    }
    for (const [name, run] of Object.entries(routes)) app.get(`/${name}`, async (request) => run(request))
    app.post('/deferred-trigger', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into audited values (${secret})`
      return { ok: true }
    })
    app.post('/deferred-fk', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into child values (${number})`
      return { ok: true }
    })
    app.get('/swallowed', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`select ${secret}::int`.catch(() => {})
      return { ok: true }
    })
    await app.ready()
    for (const name of Object.keys(routes)) {
      const response = await witness.capture(app, `/${name}`)
      expect(response.statusCode, name).toBeGreaterThanOrEqual(400)
      expect(response.json().code, name).toMatch(/^[0-9A-Z]{5}$/)
    }
    for (const path of ['/deferred-trigger', '/deferred-fk']) {
      const response = await app.inject({ method: 'POST', url: path })
      witness.seen.push(response.body)
      expect(response.json().code).toBe('FST_PG_POOL_COMMIT_FAILED')
    }
    expect((await witness.capture(app, '/swallowed')).json().code).toBe('FST_PG_POOL_COMMIT_FAILED')
    expect(await db.sql`select count(*)::int as n from audited`).toEqual([{ n: 0 }])
    for (const path of ['/health', '/metrics']) await witness.capture(app, path)
    const all = [...witness.seen, ...lines].join('\n')
    expect(all).not.toContain(secret)
    expect(all).not.toContain(`(${number})`)
    expect(all).not.toContain(`-${number}`)
  })

  test('an onLease statement failing on a header value: coded, the value in no body or log', async () => {
    const tenant = `tenant-${randomBytes(6).toString('hex')}`
    const { app, lines } = witness.loggedApp()
    await app.register(pgPoolCore, {
      connection: db.url,
      onLease: async (request, lease) => {
        await lease`select set_config('app.tenant', ${String(request.headers['x-tenant'])}::uuid::text, false)`
      },
    })
    app.get('/q', async (request) => request.db`select 1 as one`)
    await app.ready()
    const response = await app.inject({ url: '/q', headers: { 'x-tenant': tenant } })
    expect(response.json()).toMatchObject({ statusCode: 400, code: '22P02' })
    const logged = lines.filter((line) => !line.includes('"incoming request"')).join('\n')
    expect(`${response.body}\n${logged}`).not.toContain(tenant)
  })
})

describe('addresses and secrets of unreachable servers', () => {
  test('a host that does not resolve: health and metrics bodies name no host; 503 bodies neither', async () => {
    const host = `no-such-host-${randomBytes(4).toString('hex')}.invalid`
    const { app } = witness.loggedApp()
    await app.register(pgPool, {
      connection: `postgres://app:pw@${host}:5432/app`,
      pool: { lazy: true, connectTimeout: 2_000, acquireTimeout: 3_000 },
      health: { details: 'full', cacheTime: 0 },
    })
    app.get('/q', async (request) => request.db`select 1`)
    await app.ready()
    const bodies: string[] = []
    for (const path of ['/q', '/health', '/health/ready', '/health/live', '/metrics']) {
      bodies.push((await app.inject(path)).body)
    }
    expect(JSON.parse(bodies[0] as string)).toMatchObject({ statusCode: 503, code: 'FST_PG_POOL_CONNECT_FAILED' })
    expect(bodies.join('\n')).not.toContain('no-such-host')
  })

  test("a replica's password and the read-your-writes secret appear nowhere, replica down", async () => {
    const replicaPassword = `rp${randomBytes(6).toString('hex')}`
    const rywSecret = `ryw-${randomBytes(12).toString('hex')}`
    const { app, lines } = witness.loggedApp()
    await app.register(pgPool, {
      connection: db.url,
      replicas: [
        { connection: `postgres://u:${replicaPassword}@127.0.0.1:1/db`, pool: { lazy: true, connectTimeout: 500 } },
        { connection: { host: '127.0.0.1', port: 1, password: `${replicaPassword}b` }, pool: { lazy: true } },
      ],
      replica: { readYourWrites: { secret: rywSecret }, lagInterval: 50 },
      health: { details: 'full', cacheTime: 0 },
    })
    app.get('/r', { config: { db: { readOnly: true } } }, async (request) => request.db`select 1 as one`)
    await app.ready()
    // Give the monitor time to fail against the replicas (observable: the health warns).
    expect(await waitFor(async () => (await app.inject('/health')).json().status === 'warn', 10_000, 100)).toBe(true)
    const bodies = [(await app.inject('/r')).body]
    for (const path of ['/health', '/health/ready', '/metrics']) bodies.push((await app.inject(path)).body)
    const views = app.pgPools.all().map((view) => `${view.target} ${JSON.stringify(view.options)}`)
    const all = [...bodies, ...lines, ...views].join('\n')
    expect(all).not.toContain(replicaPassword)
    expect(all).not.toContain(rywSecret)
  })
})

describe('bad option values are refused at register, coded, without the password', () => {
  const password = `opw${randomBytes(6).toString('hex')}`
  const url = `postgres://app:${password}@127.0.0.1:1/app`
  const pools: Record<string, unknown>[] = [
    { max: Number.NaN },
    { max: Number.POSITIVE_INFINITY },
    { max: 0 },
    { max: 1.5 },
    { acquireTimeout: '100' },
    { acquireTimeout: 0 },
    { maxWaiting: -1 },
    { idleTimeout: Number.POSITIVE_INFINITY },
    { statementTimeout: 2 ** 31 },
    { applicationName: '' },
    { pgbouncer: 'yes' },
    { sessionReset: 'sometimes' },
    { retryAfter: 86_401 },
    { lazy: 1 },
    { instances: 1.5 },
    { password },
  ]
  for (const pool of pools) {
    test(`pool ${JSON.stringify(pool, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v)).replace(password, '<pw>')}`, async () => {
      const app = Fastify()
      const error = await app
        .register(pgPoolCore, { connection: url, pool: { lazy: true, ...pool } as never })
        .ready()
        .then(
          () => undefined,
          (e: Error & { code?: string }) => e,
        )
      await app.close().catch(() => {})
      expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(`${error?.message}\n${error?.stack}`).not.toContain(password)
    })
  }

  test('URL oddities that are refused redact the password: bad port, bad IPv6, other scheme, %ZZ', async () => {
    for (const odd of [
      `postgres://app:${password}@h:99999/db`,
      `postgres://app:${password}@[::1/db`,
      `mysql://app:${password}@h/db`,
      `postgres://app:${password}%ZZ@h/db`,
    ]) {
      const app = Fastify()
      const error = await app
        .register(pgPoolCore, { connection: odd, pool: { lazy: true } })
        .ready()
        .then(
          () => undefined,
          (e: Error & { code?: string }) => e,
        )
      await app.close().catch(() => {})
      expect(error?.code, odd).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(`${error?.message}`, odd).not.toContain(password)
    }
  })
})

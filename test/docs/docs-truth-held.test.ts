import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, registerError } from '../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'

// Hostile probing, docs-truth: documented behaviour that held, and that no other test pinned.
// Each test quotes its doc line (file:line).

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table users (id serial primary key, username text not null unique);
    insert into users (username) values ('ada'), ('grace');
    create table audit (id serial primary key, event text not null);
    create table orders (id serial primary key, item text not null);
    create table idempotency (key text primary key, order_id int not null);
    create table rooms (during int4range, exclude using gist (during with &&));
    create function raise_state(code text) returns void language plpgsql as
      $f$ begin raise exception 'internal detail nobody should see' using errcode = code; end $f$;
  `)
})
afterAll(() => db.drop())

/** Options form of the test database's URL (for options a URL cannot hold). */
function optionsOf(url: string): { host: string; port: number; database: string; username: string; password?: string } {
  const parsed = new URL(url)
  return {
    host: parsed.hostname,
    port: Number(parsed.port || 5432),
    database: parsed.pathname.slice(1),
    username: decodeURIComponent(parsed.username),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
  }
}

describe('docs/migrating-from-fastify-postgres.md', () => {
  // l.56-62: "A pg name given at the top level is refused ... naming the option meant ...; so is
  // one given inside `pool` (`idleTimeoutMillis`, `maxLifetimeSeconds`, `connectionTimeoutMillis`)";
  // l.70-74: idleTimeoutMillis → pool.idleTimeout, connectionTimeoutMillis → pool.connectTimeout,
  // maxLifetimeSeconds → pool.maxLifetime, statement_timeout → pool.statementTimeout,
  // application_name → pool.applicationName.
  test('pg pool option names, inside pool and at the top level, are refused naming their counterpart', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [
        { pool: { idleTimeoutMillis: 1000 } },
        'Invalid option pool.idleTimeoutMillis: unknown option; did you mean idleTimeout?',
      ],
      [
        { pool: { maxLifetimeSeconds: 60 } },
        'Invalid option pool.maxLifetimeSeconds: unknown option; did you mean maxLifetime?',
      ],
      [
        { pool: { connectionTimeoutMillis: 1000 } },
        'Invalid option pool.connectionTimeoutMillis: unknown option; did you mean connectTimeout?',
      ],
      [
        { statement_timeout: 1000 },
        'Invalid option statement_timeout: unknown option; did you mean pool.statementTimeout?',
      ],
      [
        { application_name: 'x' },
        'Invalid option application_name: unknown option; did you mean pool.applicationName?',
      ],
      [
        { connectionTimeoutMillis: 1000 },
        'Invalid option connectionTimeoutMillis: unknown option; did you mean pool.connectTimeout?',
      ],
    ]
    for (const [options, message] of cases) {
      const error = await registerError((app) => app.register(pgPool, { connection: db.url, ...options } as never))
      expect({ code: error.code, message: error.message }).toEqual({ code: 'FST_PG_POOL_INVALID_OPTION', message })
    }
  })

  // l.98-100: "Identifiers, inserts and lists have helpers: request.db`insert into users
  // ${request.db(body, 'username')}`, request.db`select * from users where id in ${request.db(ids)}`.
  // As with pg, `bigint` (`int8`, `count(*)`) and `numeric` columns come back as strings."
  test('the helpers the guide shows run, and int8 and numeric come back as strings', async () => {
    const { app } = await coreApp(db.url, { max: 2 })
    try {
      app.post('/users', async (request) => {
        const body = { username: (request.body as { username: string }).username, ignored: 'x' }
        return request.db`insert into users ${request.db(body, 'username')} returning username`
      })
      app.get('/users', async (request) => {
        const ids = [1, 2]
        return request.db`select username from users where id in ${request.db(ids)} order by id`
      })
      app.get('/numbers', async (request) => request.db`select count(*) as n, 1.50::numeric as price`)
      const created = await app.inject({ method: 'POST', url: '/users', payload: { username: 'linus' } })
      expect(created.json()).toEqual([{ username: 'linus' }])
      expect((await app.inject('/users')).json()).toEqual([{ username: 'ada' }, { username: 'grace' }])
      expect((await app.inject('/numbers')).json()).toEqual([{ n: '1', price: '1.50' }])
    } finally {
      await app.close()
      await db.sql`delete from users where username = 'linus'`
    }
  })
})

describe('packages/core/README.md: PostgreSQL errors in replies', () => {
  // l.469-470: "`23P01` exclusion → 409"; "`57014` cancelled → 503 with `Retry-After`" (a 57014
  // the pool did not cause, not a statement_timeout: the body's code is the SQLSTATE).
  test('23P01 answers 409 and a 57014 of the server 503 with Retry-After, the SQLSTATE as code', async () => {
    const { app } = await coreApp(db.url, { max: 2, retryAfter: 3 })
    try {
      app.post('/book', async (request) => {
        await request.db`insert into rooms values ('[1,5)')`
        return request.db`insert into rooms values ('[3,7)')`
      })
      app.get('/cancelled', async (request) => request.db`select raise_state('57014')`)
      const exclusion = await app.inject({ method: 'POST', url: '/book' })
      const cancelled = await app.inject('/cancelled')
      expect([exclusion.statusCode, exclusion.json().code, exclusion.headers['retry-after']]).toEqual([
        409,
        '23P01',
        undefined,
      ])
      expect([cancelled.statusCode, cancelled.json().code, cancelled.headers['retry-after']]).toEqual([
        503,
        '57014',
        '3',
      ])
      expect(cancelled.body).not.toContain('internal detail')
    } finally {
      await app.close()
      await db.sql`truncate rooms`
    }
  })

  // l.506-511: "`errorMapping` extends or replaces entries (5-character codes, or 2-character
  // classes, which then win over the defaults' codes of that class)";
  // `{ errorMapping: { '42501': 403, P0001: 422 } }`.
  test("the README's errorMapping sample maps P0001 to 422, and a class given wins over the defaults' codes", async () => {
    const sample = await coreApp(db.url, { max: 1 }, {}, { errorMapping: { '42501': 403, P0001: 422 } })
    const byClass = await coreApp(db.url, { max: 1 }, {}, { errorMapping: { '23': 422 } })
    try {
      for (const { app } of [sample, byClass]) {
        app.get(
          '/raise/:code',
          async (request) => request.db`select raise_state(${(request.params as { code: string }).code})`,
        )
      }
      const statuses = [
        (await sample.app.inject('/raise/P0001')).statusCode,
        (await sample.app.inject('/raise/42501')).statusCode,
        (await sample.app.inject('/raise/23505')).statusCode,
        (await byClass.app.inject('/raise/23505')).statusCode,
        (await byClass.app.inject('/raise/23502')).statusCode,
      ]
      expect(statuses).toEqual([422, 403, 409, 422, 422])
    } finally {
      await sample.app.close()
      await byClass.app.close()
    }
  })
})

describe('packages/core/README.md: session reset and onConnect', () => {
  // l.425-426: "Custom settings (`app.x`) are invisible to `pg_settings` and so are not kept:
  // pass them as startup parameters instead (`connection: { connection: { 'app.region': 'eu' } }`),
  // which `RESET ALL` keeps."
  test('a custom setting given as a startup parameter survives a request that changed it', async () => {
    const app = Fastify()
    try {
      await app.register(pgPoolCore, {
        connection: { ...optionsOf(db.directUrl), connection: { 'app.region': 'eu' } },
        pool: { max: 1 },
      })
      app.get('/move', async (request) => {
        await request.db`set app.region = 'us'`
        return request.db`select current_setting('app.region') as region`
      })
      app.get('/region', async (request) => request.db`select current_setting('app.region') as region`)
      expect((await app.inject('/move')).json()).toEqual([{ region: 'us' }])
      expect((await app.inject('/region')).json()).toEqual([{ region: 'eu' }])
    } finally {
      await app.close()
    }
  })

  // l.155-157: "What it does not reset. The existence of a custom setting a request created
  // (after `RESET ALL`, `current_setting('app.x', true)` returns `''` where a fresh session
  // returns null)" — the documented limit, as documented.
  test("a custom setting a request created reads '' after the reset, where a fresh session reads null", async () => {
    const { app } = await coreApp(db.url, { max: 1 })
    try {
      const name = `app.x_${randomBytes(3).toString('hex')}`
      app.get('/fresh', async (request) => request.db`select current_setting(${name}, true) as v`)
      app.get('/set', async (request) => request.db`select set_config(${name}, 'tenant-1', false) as v`)
      expect((await app.inject('/fresh')).json()).toEqual([{ v: null }])
      expect((await app.inject('/set')).json()).toEqual([{ v: 'tenant-1' }])
      expect((await app.inject('/fresh')).json()).toEqual([{ v: '' }])
    } finally {
      await app.close()
    }
  })
})

describe('packages/core/README.md samples, run as written', () => {
  // l.514-530: the `app.db` sample (insert with a helper, a serializable transaction, a lease).
  test('app.db: insert with a helper, transaction with isolation, lease and release', async () => {
    const { app } = await coreApp(db.url, { max: 2 })
    try {
      await app.db`insert into audit ${app.db({ event: 'boot' })}` // leases, runs, returns
      let isolation: unknown
      await app.db.transaction(
        async (sql) => {
          /* one connection, committed at the end */
          isolation = (await sql`select current_setting('transaction_isolation') as i`)[0]?.i
        },
        { isolation: 'serializable' },
      )
      const lease = await app.db.lease() // hold one connection (jobs, migrations)
      try {
        await lease`select 1`
      } finally {
        await lease.release()
      }
      expect(isolation).toBe('serializable')
      expect(await db.sql`select event from audit`).toEqual([{ event: 'boot' }])
      expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
    } finally {
      await app.close()
      await db.sql`truncate audit`
    }
  })

  // l.536-543: the LISTEN/NOTIFY sample.
  test('LISTEN/NOTIFY: the handler of app.db.listen gets app.db.notify’s payload; unlisten ends it', async () => {
    const test = await coreApp(db.url, { max: 2 })
    const { app, logs, applicationName } = test
    try {
      const listening = await app.db.listen('orders', ({ channel, payload }) => {
        app.log.info({ channel, payload }, 'order placed')
      })
      await app.db.notify('orders', JSON.stringify({ id: 42 }))
      expect(await waitFor(() => logs.some((line) => line.msg === 'order placed'))).toBe(true)
      expect(logs.find((line) => line.msg === 'order placed')).toMatchObject({
        channel: 'orders',
        payload: '{"id":42}',
      })
      await listening.unlisten()
      expect(await waitFor(async () => (await db.countConnections(`${applicationName}/listen`)) === 0, 2_000)).toBe(
        true,
      )
    } finally {
      await app.close()
    }
  })

  // l.309-326: the idempotency-key route; "A retry after COMMIT_UNKNOWN then either finds the key
  // (committed: the same answer) or does the work once (not committed). Concurrent retries with
  // one key meet the unique constraint: one gets 409."
  test('the idempotency-key route: concurrent attempts give one 201 and one 409, a retry finds the order', async () => {
    const { app } = await coreApp(db.url, { max: 4 })
    const locker = postgres(db.directUrl, { max: 1, onnotice: () => {} })
    try {
      app.post('/orders', { config: { db: { transaction: true } } }, async (request, reply) => {
        const key = request.headers['idempotency-key'] as string
        const [done] = await request.db`select order_id from idempotency where key = ${key}`
        if (done) return reply.code(201).send({ orderId: done.order_id }) // the earlier attempt committed
        const [order] =
          await request.db`insert into orders ${request.db(request.body as Record<string, string>)} returning id`
        await request.db`insert into idempotency (key, order_id) values (${key}, ${order?.id})`
        return reply.code(201).send({ orderId: order?.id })
      })
      const send = () =>
        app.inject({
          method: 'POST',
          url: '/orders',
          headers: { 'idempotency-key': 'k-1' },
          payload: { item: 'apple' },
        })
      // Both attempts read "no key" before either inserts one: the table is locked against writes
      // until both wait on it.
      let unlock = () => {}
      const unlocked = new Promise<void>((resolve) => {
        unlock = resolve
      })
      let locked = () => {}
      const isLocked = new Promise<void>((resolve) => {
        locked = resolve
      })
      const holding = locker.begin(async (sql) => {
        await sql`lock table idempotency in share mode`
        locked()
        await unlocked
      })
      await isLocked
      const attempts = [send(), send()]
      const waiting = await waitFor(async () => {
        const [row] = await db.sql<{ n: number }[]>`
          select count(*)::int as n from pg_locks l join pg_class c on c.oid = l.relation
          where c.relname = 'idempotency' and not l.granted`
        return (row?.n ?? 0) >= 2
      }, 5_000)
      unlock()
      await holding
      const [first, second] = await Promise.all(attempts)
      expect(waiting).toBe(true)
      const answers = [first, second].map((r) => ({ status: r?.statusCode, body: r?.json() }))
      answers.sort((a, b) => (a.status ?? 0) - (b.status ?? 0))
      expect(answers[0]?.status).toBe(201)
      expect(answers[1]).toMatchObject({ status: 409, body: { code: '23505' } })
      // "the same answer": status and body (the README's sample answered a retry 200 before).
      const retry = await send()
      expect({ status: retry.statusCode, body: retry.json() }).toEqual(answers[0])
      expect(await db.sql`select count(*)::int as n from orders`).toEqual([{ n: 1 }])
    } finally {
      await locker.end({ timeout: 1 })
      await app.close()
      await db.sql`truncate orders, idempotency`
    }
  })

  // l.640: "Give it in the options form (a URL cannot hold a function); postgres.js's alias
  // `pass` works too." (l.622: "The pool calls it once for each new server connection").
  test('connection.pass as a password function logs in and is called per new connection', async () => {
    const role = uniqueName('fpp_pass').replace('-', '_')
    const password = `pw-${randomBytes(8).toString('hex')}`
    await db.admin.unsafe(`create role ${role} login password '${password}'`)
    await db.admin.unsafe(`grant connect on database ${optionsOf(db.directUrl).database} to ${role}`)
    let calls = 0
    const app = Fastify()
    try {
      const { host, port, database } = optionsOf(db.directUrl)
      await app.register(pgPoolCore, {
        connection: {
          host,
          port,
          database,
          username: role,
          pass: () => {
            calls++
            return password
          },
        } as never,
        pool: { max: 1 },
      })
      app.get('/who', async (request) => request.db`select current_user as who`)
      expect((await app.inject('/who')).json()).toEqual([{ who: role }])
      // Under trust authentication the server asks for no password at all.
      const wrong = postgres({ host, port, database, username: role, password: 'wrong', max: 1, onnotice: () => {} })
      const enforced = await wrong`select 1`.then(
        () => false,
        () => true,
      )
      await wrong.end({ timeout: 0 })
      if (enforced) expect(calls).toBeGreaterThanOrEqual(1)
    } finally {
      await app.close()
      await db.admin.unsafe(`drop role if exists ${role}`).catch(() => {})
    }
  })
})

describe('packages/backpressure/README.md sample, run as written', () => {
  // l.12-44: the sample app (its insert of a JSON body through a helper included).
  test('the sample registers and its three routes answer; the webhook stores the JSON body', async () => {
    const app = Fastify()
    try {
      await app.register(pgPoolCore, { connection: db.url, pool: { max: 10 } })
      await app.register(pgPoolBackpressure, {
        target: 40, // ms of standing queueing delay tolerated
        maxDelay: 60, // ms of expected wait beyond which a burst is refused
        minRetryAfter: 1, // whole seconds, bounds of the computed Retry-After
        maxRetryAfter: 30,
        process: { maxEventLoopDelay: 1000 },
      })
      await app.db`create table if not exists items (id int primary key, name text, stock int)`
      await app.db`create table if not exists events (id serial primary key, body jsonb not null)`
      app.get('/items/:id', async (request, reply) => {
        const [item] = await request.db`select * from items where id = ${(request.params as { id: string }).id}`
        return item ?? reply.code(404).send({ message: 'no such item' })
      })
      app.get(
        '/reports',
        { config: { backpressure: { priority: 'low' } } },
        async (request) => request.db`select count(*) from items`,
      )
      app.post('/webhooks', { config: { backpressure: false } }, async (request) => {
        await request.db`insert into events ${request.db({ body: request.body as postgres.JSONValue })}`
        return { ok: true }
      })
      expect((await app.inject('/items/1')).statusCode).toBe(404)
      expect((await app.inject('/reports')).json()).toEqual([{ count: '0' }])
      const hook = await app.inject({ method: 'POST', url: '/webhooks', payload: { hello: 'world' } })
      expect(hook.json()).toEqual({ ok: true })
      expect(await db.sql`select body, jsonb_typeof(body) as t from events`).toEqual([
        { body: { hello: 'world' }, t: 'object' },
      ])
    } finally {
      await app.close()
    }
  })
})

describe('docs/pgbouncer-and-sizing.md: pool.pgbouncer', () => {
  // l.11: "no named prepared statements (postgres.js `prepare: false`)"; l.16: "`statementTimeout`
  // not sent as a startup parameter"; l.15: "session reset between requests: skipped".
  test('pgbouncer: true prepares no statement, sends no statement_timeout and no reset', async () => {
    const { app } = await coreApp(db.directUrl, { max: 1, pgbouncer: true, statementTimeout: 12_345 })
    try {
      app.get('/timeout', async (request) => request.db`show statement_timeout`)
      app.get('/prepared', async (request) => request.db`select count(*)::int as n from pg_prepared_statements`)
      app.get('/set', async (request) => request.db`select set_config('app.bouncer', 'left', false) as v`)
      app.get('/get', async (request) => request.db`select current_setting('app.bouncer', true) as v`)
      const timeout = (await app.inject('/timeout')).json()[0].statement_timeout
      expect(timeout).not.toBe('12345ms')
      expect((await app.inject('/prepared')).json()).toEqual([{ n: 0 }])
      await app.inject('/set')
      // No reset: the session state a request left is there for the next (why such SQL "does not
      // work reliably" behind PgBouncer, l.14).
      expect((await app.inject('/get')).json()).toEqual([{ v: 'left' }])
    } finally {
      await app.close()
    }
  })
})

describe('packages/metrics/README.md and packages/fastify-pg-pool/README.md: what is counted and logged', () => {
  // packages/metrics/README.md:107: "Not counted: what Fastify answers itself before routing,
  // with no hook run (a URL with bad percent-encoding, 400 `FST_ERR_BAD_URL`; a path parameter
  // past `maxParamLength`, 414...)".
  test('a bad percent-encoding (400) and a too long path parameter (414) are not in the HTTP histogram', async () => {
    const { app } = await coreApp(db.url, { max: 1 })
    try {
      await app.register(pgPoolMetrics)
      app.get('/items/:id', { config: { db: false } }, async (request) => request.params)
      expect((await app.inject('/items/%zz')).statusCode).toBe(400)
      expect((await app.inject(`/items/${'a'.repeat(200)}`)).statusCode).toBe(414)
      expect((await app.inject('/items/1')).statusCode).toBe(200)
      const counts = (await app.inject('/metrics')).body
        .split('\n')
        .filter((line) => line.startsWith('pg_pool_http_request_duration_seconds_count'))
      expect(counts).toEqual([
        'pg_pool_http_request_duration_seconds_count{method="GET",route="/items/:id",status_class="2xx"} 1',
      ])
    } finally {
      await app.close()
    }
  })

  // packages/fastify-pg-pool/README.md:93-94: "Fastify's register options given to `pgPool`
  // apply to the routes it declares: ... `logLevel` to the health routes"; packages/metrics/
  // README.md:63: the metrics route "logs at `warn` level". The app's own routes keep the app's.
  test("the umbrella's logLevel quiets the health routes only; /metrics logs at warn", async () => {
    const logs: { msg?: string; req?: { url?: string } }[] = []
    const stream = new Writable({
      write(chunk, _encoding, callback) {
        for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line))
        callback()
      },
    })
    const app = Fastify({ logger: { level: 'info', stream } })
    try {
      await app.register(pgPool, {
        connection: db.url,
        pool: { max: 1 },
        logLevel: 'warn',
        backpressure: { process: false },
      } as never)
      app.get('/mine', { config: { db: false } }, async () => ({ ok: true }))
      for (const url of ['/mine', '/health/live', '/health/ready', '/metrics']) await app.inject(url)
      expect(logs.filter((line) => line.msg === 'incoming request').map((line) => line.req?.url)).toEqual(['/mine'])
    } finally {
      await app.close()
    }
  })
})

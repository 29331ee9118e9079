import { readFileSync } from 'node:fs'
import { Writable } from 'node:stream'
import fastifyPostgres from '@fastify/postgres'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// docs/migrating-from-fastify-postgres.md cannot rot: each "before" block runs on
// @fastify/postgres, each "after" block on fastify-pg-pool, each against a database of its own
// with the same rows, and the answers are compared (equal where the guide says they are
// counterparts, different where it says they differ).

const guidePath = new URL('../../docs/migrating-from-fastify-postgres.md', import.meta.url)
const guide = readFileSync(guidePath, 'utf8')

/** `<!-- sample: before query -->` followed by a js block. */
function samples(): Map<string, string> {
  const found = new Map<string, string>()
  for (const match of guide.matchAll(/<!-- sample: (before|after) ([a-z-]+) -->\n```js\n([\s\S]*?)\n```/g)) {
    const key = `${match[1]} ${match[2]}`
    expect(found.has(key), `${key} appears once`).toBe(false)
    found.set(key, match[3] as string)
  }
  return found
}

const shared = [
  'setup',
  'query',
  'pool-query',
  'connect',
  'transact',
  'route-transaction',
  'swallowed-error',
  'named',
  'pool',
  'unique-violation',
  'optional-value',
  'caught-error',
]
const afterOnly = ['unsafe', 'begin']

/** Log lines of the apps the samples create (their `logger: true` lands here, not on stdout). */
const logs: string[] = []
const sink = new Writable({
  write(chunk, _encoding, callback) {
    logs.push(String(chunk))
    callback()
  },
})
const quietFastify = (options: FastifyServerOptions = {}) =>
  Fastify({ ...options, logger: options.logger ? { level: 'warn', stream: sink } : false })

/** What the samples may import, bound to the real modules (Fastify's logger sent to `logs`). */
const modules: Record<string, unknown> = {
  fastify: quietFastify,
  '@fastify/postgres': fastifyPostgres,
  'fastify-pg-pool': pgPool,
  '@fastify-pg-pool/core': pgPoolCore,
}

/** The sample's imports, bound to `modules`. */
function imports(code: string): Record<string, unknown> {
  const bound: Record<string, unknown> = {}
  for (const [, local, specifier] of code.matchAll(/^import (\w+) from '([^']+)'$/gm)) {
    expect(Object.keys(modules), `import from ${specifier}`).toContain(specifier)
    bound[local as string] = modules[specifier as string]
  }
  return bound
}

type AsyncFn = (...args: unknown[]) => Promise<Record<string, unknown>>
const AsyncFunction = (async () => {}).constructor as new (...args: string[]) => AsyncFn

/**
 * Runs a sample as the body of an async function with `scope` in reach; its imports bind to
 * `modules`. Returns the functions and constants it declares at the top level.
 */
async function run(code: string, scope: Record<string, unknown>): Promise<Record<string, unknown>> {
  const bound: Record<string, unknown> = { ...scope, ...imports(code) }
  const body = code.replace(/^import .*$/gm, '')
  const declared = [...body.matchAll(/^(?:async function|function|const) (\w+)/gm)].map((match) => match[1])
  const fn = new AsyncFunction(...Object.keys(bound), `${body}\nreturn { ${declared.join(', ')} }`)
  return fn(...Object.values(bound))
}

/** The guide's own schema block: what it tells its readers to create is what the samples run on. */
const schema = /<!-- schema -->\n```sql\n([\s\S]*?)\n```/.exec(guide)?.[1] ?? ''

let before: TestDatabase
let after: TestDatabase
let reporting: TestDatabase
const envBefore = { DATABASE_URL: process.env.DATABASE_URL, REPORTING_URL: process.env.REPORTING_URL }
/** The apps the setup samples built, and what the other samples declared. */
const built: Record<'before' | 'after', { app: FastifyInstance; declared: Record<string, unknown> }> = {} as never

async function build(side: 'before' | 'after', db: TestDatabase): Promise<void> {
  const all = samples()
  process.env.DATABASE_URL = db.directUrl
  process.env.REPORTING_URL = reporting.directUrl
  const setupCode = all.get(`${side} setup`) as string
  const setup = await run(setupCode, {})
  const app = (side === 'before' ? setup.fastify : setup.app) as FastifyInstance
  expect(app, `${side} setup creates its app`).toBeDefined()
  const declared: Record<string, unknown> = {}
  for (const name of [...shared.slice(1), ...(side === 'after' ? afterOnly : [])]) {
    // The samples continue the setup sample: its imports and its app are in scope.
    const scope = { ...imports(setupCode), ...(side === 'before' ? { fastify: app } : { app }) }
    Object.assign(declared, await run(all.get(`${side} ${name}`) as string, scope))
  }
  await app.ready()
  built[side] = { app, declared }
}

async function both(request: { method?: 'GET' | 'POST'; url: string; payload?: object }) {
  const answer = async (side: 'before' | 'after') => {
    const response = await built[side].app.inject(request)
    return { status: response.statusCode, body: response.body ? response.json() : undefined }
  }
  return { before: await answer('before'), after: await answer('after') }
}

async function audit(db: TestDatabase, event: string): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from audit where event = ${event}`
  return row?.n ?? -1
}

beforeAll(async () => {
  ;[before, after, reporting] = await Promise.all([createTestDatabase(), createTestDatabase(), createTestDatabase()])
  await before.sql.unsafe(schema)
  await after.sql.unsafe(schema)
  await reporting.sql.unsafe(`${schema} insert into users (username) values ('x'), ('y'), ('z');`)
  await build('before', before)
  await build('after', after)
})
afterAll(async () => {
  await built.before?.app.close()
  await built.after?.app.close()
  for (const [key, value] of Object.entries(envBefore)) {
    if (value === undefined) delete process.env[key]
    else process.env[key] = value
  }
  await Promise.all([before?.drop(), after?.drop(), reporting?.drop()])
})

describe('the migration guide', () => {
  test('has a before and an after for each counterpart, and is linked from the README', () => {
    const keys = [...samples().keys()].sort()
    expect(keys).toEqual(
      [
        ...shared.flatMap((name) => [`before ${name}`, `after ${name}`]),
        ...afterOnly.map((name) => `after ${name}`),
      ].sort(),
    )
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
    expect(readme).toContain('(docs/migrating-from-fastify-postgres.md)')
    // Its readers get the tables the samples need from the guide itself.
    expect(schema).toContain('create table users')
    expect(schema).toContain('create table audit')
  })

  test('@fastify/postgres has the API the guide maps: query, connect, transact, pool, Client', () => {
    const pg = built.before.app.pg as unknown as Record<string, unknown>
    for (const key of ['query', 'connect', 'transact', 'pool', 'Client']) expect(pg).toHaveProperty(key)
    expect(pg.reporting).toHaveProperty('query')
  })

  test('fastify.pg.query → request.db (and request.db.unsafe for $1 strings): the same answers', async () => {
    const found = await both({ url: '/users/1' })
    expect(found.before).toEqual({ status: 200, body: { id: 1, username: 'ada' } })
    expect(found.after).toEqual(found.before)
    const missing = await both({ url: '/users/99' })
    expect(missing.before).toEqual({ status: 404, body: { message: 'no such user' } })
    expect(missing.after).toEqual(missing.before)
    const unsafe = await built.after.app.inject('/users/1/unsafe')
    expect(unsafe.json()).toEqual({ id: 1, username: 'ada' })
  })

  test('fastify.pg.query outside requests → app.db', async () => {
    const count = (side: 'before' | 'after') => (built[side].declared.countUsers as () => Promise<number>)()
    expect(await count('before')).toBe(2)
    expect(await count('after')).toBe(2)
  })

  test('fastify.pg.connect → app.db.lease: the same result; the SET reaches the next holder with pg only', async () => {
    const job = (side: 'before' | 'after') => (built[side].declared.nightlyJob as () => Promise<number>)()
    expect(await job('before')).toBe(2)
    // pg hands out its most recently released client: the job's, with the job's setting.
    const { rows } = await built.before.app.pg.query('SHOW statement_timeout')
    expect(rows[0].statement_timeout).toBe('5min')

    expect(await job('after')).toBe(2)
    const [shown] = await built.after.app.db`show statement_timeout`
    expect(shown?.statement_timeout).toBe('30s') // the pool's statementTimeout, not the job's
    // release() twice is harmless; a query after it is refused.
    const lease = await built.after.app.db.lease()
    await lease.release()
    await lease.release()
    await expect(lease`select 1`).rejects.toMatchObject({ code: 'FST_PG_POOL_RELEASED' })
  })

  test('fastify.pg.transact → app.db.transaction; request.db.begin in a handler', async () => {
    const rename = (side: 'before' | 'after') =>
      (built[side].declared.renameUser as (id: number, name: string) => Promise<unknown>)(2, 'grace h')
    expect(await rename('before')).toEqual({ id: 2, username: 'grace h' })
    expect(await rename('after')).toEqual({ id: 2, username: 'grace h' })

    const begun = await built.after.app.inject({
      method: 'POST',
      url: '/users/2/rename',
      payload: { username: 'grace' },
    })
    expect(begun.json()).toEqual({ id: 2, username: 'grace' })
    expect(await after.sql`select username from users where id = 2`).toEqual([{ username: 'grace' }])
  })

  test('{ pg: { transact: true } } → config.db.transaction: a 409 without a throw commits with pg, rolls back here', async () => {
    const created = await both({ method: 'POST', url: '/users', payload: { username: 'linus' } })
    expect(created.before).toEqual({ status: 201, body: { id: expect.any(Number) } })
    expect(created.after).toEqual({ status: 201, body: { id: expect.any(Number) } })
    const taken = await both({ method: 'POST', url: '/users', payload: { username: 'linus' } })
    expect(taken.before).toEqual({ status: 409, body: { message: 'username taken' } })
    expect(taken.after).toEqual(taken.before)
    expect(await audit(before, 'create linus')).toBe(2)
    expect(await audit(after, 'create linus')).toBe(1)
  })

  test('a statement error the handler swallowed: a 200 for work not committed with pg, a 500 COMMIT_FAILED here', async () => {
    const quiet = await both({ method: 'POST', url: '/users/quiet', payload: { username: 'dup' } })
    expect(quiet.before).toEqual({ status: 200, body: { ok: true } })
    expect(quiet.after).toEqual({ status: 500, body: expect.objectContaining({ code: 'FST_PG_POOL_COMMIT_FAILED' }) })
    // In both, nothing was committed; only one side told its client.
    expect(await audit(before, 'quiet')).toBe(0)
    expect(await audit(after, 'quiet')).toBe(0)
  })

  test('fastify.pg.<name> → request.dbs.<name> and config.db.instance', async () => {
    const report = await both({ url: '/report' })
    expect(report.before).toEqual({ status: 200, body: { users: 5 } })
    expect(report.after).toEqual(report.before)
    expect((await built.after.app.inject('/report/direct')).json()).toEqual({ users: 5 })
    const reportingDb = built.after.app.dbs.reporting
    if (reportingDb === undefined) throw new Error('app.dbs.reporting is missing')
    expect(await reportingDb`select count(*)::int as users from users`).toEqual([{ users: 5 }])
  })

  test('the guide’s PgPoolInstances declaration is the one the named-instances test type-checks', () => {
    const [, declaration] = guide.match(/```ts\n(declare module 'fastify-pg-pool'[\s\S]*?)\n```/) ?? []
    const typed = readFileSync(new URL('../instances/named-instances.test.ts', import.meta.url), 'utf8')
    expect(declaration).toBeDefined()
    expect(typed).toContain(declaration as string)
  })

  test('fastify.pg.pool → app.pgPool: the same counts', async () => {
    const pool = await both({ url: '/pool' })
    for (const side of [pool.before, pool.after]) {
      expect(side.status).toBe(200)
      expect(side.body).toEqual({ total: expect.any(Number), idle: expect.any(Number), waiting: 0 })
      expect(side.body.total).toBeGreaterThanOrEqual(1)
    }
  })

  test('a unique violation: pg’s 500 with the server’s message, a 409 by SQLSTATE here', async () => {
    const ok = await both({ method: 'POST', url: '/users/strict', payload: { username: 'new' } })
    expect(ok.before).toEqual({ status: 200, body: { id: expect.any(Number) } })
    expect(ok.after).toEqual({ status: 200, body: { id: expect.any(Number) } })
    const duplicate = await both({ method: 'POST', url: '/users/strict', payload: { username: 'ada' } })
    expect(duplicate.before.status).toBe(500)
    expect(duplicate.before.body.message).toBe('duplicate key value violates unique constraint "users_username_key"')
    expect(duplicate.after.status).toBe(409)
    expect(duplicate.after.body.code).toBe('23505')
    expect(JSON.stringify(duplicate.after.body)).not.toMatch(/duplicate key|users_username_key/)
  })

  test('pg option names at the top level are refused, naming the option meant', async () => {
    const app = Fastify()
    const error = await app
      .register(pgPool, { connectionString: after.directUrl } as never)
      .then(() => app.ready())
      .then(
        () => undefined,
        (e: Error & { code?: string }) => e,
      )
    await app.close()
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toMatch(/connectionString: unknown option; did you mean connection\?/)
  })

  test('a request that finds no connection gets a coded 503 with Retry-After after acquireTimeout', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, { connection: after.directUrl, pool: { max: 1, acquireTimeout: 200 } })
    let release = () => {}
    const held = new Promise<void>((resolve) => {
      release = resolve
    })
    app.get('/hold', async (request) => {
      await request.db`select 1`
      await held
      return {}
    })
    app.get('/q', async (request) => request.db`select 1 as one`)
    const holding = app.inject('/hold')
    expect(await waitFor(() => app.pgPool.stats().leased === 1)).toBe(true)
    const refused = await app.inject('/q')
    release()
    await holding
    await app.close()
    expect(refused.statusCode).toBe(503)
    expect(refused.headers['retry-after']).toBe('1')
    expect(refused.json()).toMatchObject({ code: 'FST_PG_POOL_ACQUIRE_TIMEOUT' })
  })
})

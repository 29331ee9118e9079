import { fileURLToPath } from 'node:url'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { pgPool } from 'fastify-pg-pool'
import ts from 'typescript'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, registerError } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Found by hostile probing (docs-truth, round nine): each test is a claim of the documentation
// that the code did not keep. Where the code was right, the doc was corrected and the test pins
// the behaviour it now states; where the doc was right, the code was fixed (those tests failed
// before the fix: the budget output without its max, replica options named as the primary's, a
// misspelled otel.traceContext not suggested, requireInstances named without its part).

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (body text not null)`
})
afterAll(() => db.drop())

describe('session reset (docs/faults.md)', () => {
  // docs/faults.md said "the reset runs only after a request that may have changed its session (a
  // plain query leaves the connection alone)": stale. As the core README says, every request that
  // ran a statement gets the full reset (the doc now says so).
  test('after a request that ran only a plain query, the full reset runs', async () => {
    const { app, applicationName } = await coreApp(db.url, { max: 1 })
    try {
      app.get('/plain', async (request) => request.db`select 1 as one`)
      expect((await app.inject('/plain')).statusCode).toBe(200)
      let last = ''
      // The reset, when one is sent, is queued on the connection as the lease comes back.
      await waitFor(async () => {
        const rows = await db.admin<{ query: string; state: string }[]>`
          select query, state from pg_stat_activity where application_name = ${applicationName}`
        last = rows[0]?.query ?? ''
        return rows[0]?.state === 'idle' && last.includes('RESET ALL')
      }, 1_000)
      expect(last).toContain('RESET ALL')
    } finally {
      await app.close()
    }
  })
})

describe('route transactions cut by handlerTimeout (packages/core/README.md)', () => {
  // The core README said a handlerTimeout's reply is a 503 FST_PG_POOL_ABORTED with Retry-After:
  // the reply is Fastify's own (it answers the request when its timer fires), and the README now
  // says so. What the pool owes holds: the transaction rolls back.
  test("a handlerTimeout that ends a route transaction: rolled back, and Fastify's 503 FST_ERR_HANDLER_TIMEOUT is the reply", async () => {
    await db.sql`truncate note`
    const { app } = await coreApp(db.url, { max: 1 }, { handlerTimeout: 300 })
    try {
      app.post('/order', { config: { db: { transaction: true } } }, async (request) => {
        await request.db`insert into note values ('order')`
        await new Promise((resolve) => setTimeout(resolve, 700))
        return { ok: true }
      })
      const response = await app.inject({ method: 'POST', url: '/order' })
      await waitFor(() => app.pgPool.stats().leased === 0, 2_000)
      expect(await db.sql`select * from note`).toHaveLength(0) // holds: rolled back
      expect({
        status: response.statusCode,
        code: response.json().code,
        retryAfter: response.headers['retry-after'],
      }).toEqual({ status: 503, code: 'FST_ERR_HANDLER_TIMEOUT', retryAfter: undefined })
    } finally {
      await app.close()
    }
  })
})

describe('the connection budget warning (docs/pgbouncer-and-sizing.md)', () => {
  const max = 15
  const instances = 1000

  // docs/pgbouncer-and-sizing.md quoted the warning as "pool max 15 x 8 instances = 120
  // connections, more than the 97 the server allows": the log says more (the pool's name, the
  // server's figures, what to do), and the doc now quotes it.
  test('the startup warning reads as documented: "pool primary: max 15 x N instances = … connections, more than the … the server allows"', async () => {
    const { app, logs } = await coreApp(db.url, { max, instances })
    try {
      const available = app.pgPool.budget()?.available
      expect(available).toBeGreaterThan(0)
      const warning = logs.find((line) => line.level === 40 && String(line.msg).includes('instances'))
      expect(String(warning?.msg)).toContain(
        `pool primary: max ${max} x ${instances} instances = ${max * instances} connections, more than the ${available} the server allows (max_connections `,
      )
    } finally {
      await app.close()
    }
  })

  // /health/ready's postgres:budget output read "pool max x 1000 instances = ...": the max was
  // missing (failed before the fix: ConnectionBudget now carries it).
  test('the postgres:budget output names the pool max: "pool max 15 x N instances"', async () => {
    const { app } = await coreApp(db.url, { max, instances })
    try {
      await app.register(pgPoolHealth)
      const body = (await app.inject('/health/ready')).json()
      const budget = body.checks['postgres:budget'][0]
      expect(budget.status).toBe('warn') // holds
      expect(budget.output).toContain(`pool max ${max} x ${instances} instances = ${max * instances} connections`)
    } finally {
      await app.close()
    }
  })
})

describe('app.pgPools (packages/core/README.md)', () => {
  // The core README said app.pgPools offers "only all(), get() and onAdd()": it has onClosed() too,
  // which the same README describes further down (the list now names it).
  test('app.pgPools offers only all(), get(), onAdd() and onClosed()', async () => {
    const { app } = await coreApp(db.url, { max: 1 })
    try {
      expect(Object.keys(app.pgPools).sort()).toEqual(['all', 'get', 'onAdd', 'onClosed'])
    } finally {
      await app.close()
    }
  })
})

/** Type errors of `code` compiled as a module of this directory (strict, as test/tsconfig.json). */
function typeErrors(code: string): string[] {
  const file = fileURLToPath(new URL('./__docs-truth-snippet.ts', import.meta.url))
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: ['node'],
    lib: ['lib.es2023.d.ts'],
  }
  const host = ts.createCompilerHost(options)
  const { getSourceFile, fileExists, readFile } = host
  host.getSourceFile = (name, language, ...rest) =>
    name === file ? ts.createSourceFile(name, code, language) : getSourceFile.call(host, name, language, ...rest)
  host.fileExists = (name) => name === file || fileExists.call(host, name)
  host.readFile = (name) => (name === file ? code : readFile.call(host, name))
  const program = ts.createProgram([file], options, host)
  return ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, ' '))
}

describe('types of documented APIs', () => {
  // app.db.replica is documented for jobs (core README, docs/replicas.md) but PoolDb had no
  // `replica`: "Property 'replica' does not exist on type 'PoolDb'" (failed before the fix). It is
  // typed optional, as request.db.replica: there only when the instance has replicas.
  test('app.db.replica, documented for jobs, type-checks (optional: present with replicas)', () => {
    const errors = typeErrors(`import type { FastifyInstance } from 'fastify'
import '@fastify-pg-pool/core'
export async function job(app: FastifyInstance) {
  const replica = app.db.replica
  return replica === undefined ? [] : replica\`select 1 as one\`
}
`)
    expect(errors).toEqual([])
  })
})

describe('option errors name the option (packages/core/README.md)', () => {
  // packages/core/README.md:844: FST_PG_POOL_INVALID_OPTION "an invalid or unknown option, at
  // `register` ... (names it, and the closest valid name)"; the option kit's own contract is
  // "Invalid option <full.path>: <problem>" (packages/core/src/option-kit.ts:5-8).
  // Today every problem of a read replica's options is reported under the primary's option
  // names: a bad replica URL is "Invalid option connection: expected a postgres:// URL ...", a
  // replica pool's max 0 is "Invalid option pool.max: ...", a typo in a replica's options object
  // "Invalid option connection.hostt". An operator then checks the primary's DATABASE_URL and
  // pool options, which are fine. Cause: resolveReplicas (packages/core/src/options.ts:567 and
  // 580) calls resolveConnection/resolvePoolOptions, which name their scopes 'connection' and
  // 'pool', without the replicas[i] path.
  test('a bad read replica option is named replicas[i]…, not as the primary’s connection or pool', async () => {
    const messages = [
      (await registerError((app) => app.register(pgPoolCore, { connection: db.url, replicas: ['mysql://u:pw@h/db'] })))
        .message,
      (
        await registerError((app) =>
          app.register(pgPoolCore, { connection: db.url, replicas: [{ connection: db.url, pool: { max: 0 } }] }),
        )
      ).message,
      (
        await registerError((app) =>
          app.register(pgPoolCore, { connection: db.url, replicas: [{ hostt: 'x' } as never] }),
        )
      ).message,
    ]
    expect(messages).toEqual([
      expect.stringMatching(/^Invalid option replicas\[0\]/),
      expect.stringMatching(/^Invalid option replicas\[0\]\.pool\.max/),
      expect.stringMatching(/^Invalid option replicas\[0\]/),
    ])
  })

  // packages/fastify-pg-pool/README.md:89-91: "Every key, here and at every level of each part,
  // is checked at `register`: a misspelled one ... is refused with `FST_PG_POOL_INVALID_OPTION`
  // naming the key and the closest valid one". `otel.traceContext` is one of the umbrella's otel
  // keys (l.86, l.132). Misspelled `tracecontext` (case only) or `traceContxt`, it is refused as
  // "Invalid option otel.tracecontext: unknown option; expected one of tracerProvider,
  // meterProvider, traces, metrics, queryText, poolName, pools": the list omits the valid key
  // and nothing names traceContext. Cause: packages/fastify-pg-pool/src/plugin.ts:104 takes out
  // `traceContext` by its exact name and hands the rest to the otel plugin's table
  // (packages/otel/src/options.ts:142), which does not know it.
  test('a misspelled otel.traceContext is refused naming traceContext', async () => {
    const error = await registerError((app) =>
      app.register(pgPool, { connection: db.url, otel: { tracecontext: true } } as never),
    )
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION') // holds
    expect(error.message).toMatch(/did you mean traceContext\?/)
  })

  // packages/health/README.md:158-160: "Invalid options fail at `register` with
  // `FST_PG_POOL_INVALID_OPTION` naming the option, e.g. `Invalid option health.pingTimeout: ...`".
  // `requireInstances` naming no instance (l.152) is named without its part: today
  // "Invalid option requireInstances: no instance is named \"reportng\"; ..." (packages/health/
  // src/plugin.ts:71-74), while a requireInstances of the wrong type is "health.requireInstances".
  test('requireInstances naming no instance is refused as health.requireInstances', async () => {
    const error = await registerError(async (app) => {
      await app.register(pgPoolCore, { connection: db.url, pool: { lazy: true } })
      await app.register(pgPoolCore, { name: 'reporting', connection: db.url, pool: { lazy: true } })
      await app.register(pgPoolHealth, { requireInstances: ['reportng'] })
    })
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION') // holds
    expect(error.message).toMatch(/^Invalid option health\.requireInstances: /)
  })
})

describe('metric labels (packages/metrics/README.md)', () => {
  // The metrics README said pg_pool_lease_seconds' routes are route templates and `app.db`: the
  // core's own read of the server's max_connections is a lease too, `route="connection budget"`
  // (with lazy: true, after the first connection). The README now names it.
  test("pg_pool_lease_seconds' routes: route templates, and the core's connection budget read", async () => {
    const { app } = await coreApp(db.url, { max: 2, lazy: true })
    try {
      await app.register(pgPoolMetrics)
      app.get('/q', async (request) => request.db`select 1 as one`)
      await app.inject('/q')
      await waitFor(() => app.pgPool.budget() !== undefined, 2_000)
      const routes = (await app.inject('/metrics')).body
        .split('\n')
        .filter((line) => line.startsWith('pg_pool_lease_seconds_count'))
        .map((line) => /route="([^"]*)"/.exec(line)?.[1])
      expect(routes.sort()).toEqual(['/q', 'connection budget'])
    } finally {
      await app.close()
    }
  })
})

describe('route config of the probes and the metrics route', () => {
  // The health and metrics READMEs said their routes are declared with
  // `config: { db: false, backpressure: false }`: they carry `db: false` only (the core's "uses no
  // database", which admission control reads), and the READMEs now say so.
  test('the health and metrics routes carry config.db === false', async () => {
    const { app } = await coreApp(db.url, { max: 1 })
    try {
      const configs: Record<string, unknown> = {}
      app.addHook('onRoute', (route) => {
        if (route.method === 'GET') configs[route.url] = (route.config as { db?: unknown }).db
      })
      await app.register(pgPoolHealth)
      await app.register(pgPoolMetrics)
      await app.ready()
      expect(configs).toEqual({
        '/health/live': false,
        '/health/ready': false,
        '/health': false,
        '/metrics': false,
      })
    } finally {
      await app.close()
    }
  })
})

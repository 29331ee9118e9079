import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { beforeAll, describe, expect, test } from 'vitest'
import { fixtureDir, pnpmProject, project, tsc, writeFiles } from './consumer-kit.js'

// Found by hostile probing (round nine, stranger); each test failed before its fix. The public types, as a stranger compiles against them:
// the six tarballs packed with pnpm (consumer-kit.ts), installed with npm into a project outside
// the workspace (fastify, TypeScript 5.9, @types/node 20 from the registry), and a fixture file
// type-checked with that project's tsc under settings the CI's consumer leg (only
// `--module nodenext`) does not try. Each fixture marks what must be an error with
// `@ts-expect-error`, so a clean tsc run (exit 0, no error) is the correct outcome; where the
// runtime's side of the claim matters, the test checks it first, in-process, on the workspace's
// build (the same sources).

let dir: string
beforeAll(async () => {
  dir = await project('types', { deps: ['fastify@^5.12.8', 'typescript@~5.9.3', '@types/node@^20.19.43'] })
}, 600_000)

const strict = ['--strict', '--target', 'es2022', '--lib', 'es2023', '--types', 'node']

/** A fixture that uses the suite's errors: every line marked must be a type error. */
const errorsFixture = `
import { errors, type PgPoolErrorCode } from 'fastify-pg-pool'
import { errors as coreErrors } from '@fastify-pg-pool/core'

const closed = new errors.FST_PG_POOL_CLOSED()
export const code: 'FST_PG_POOL_CLOSED' = closed.code
export const status: 503 = closed.statusCode
// @ts-expect-error the code is its literal, not any string
export const wrongCode: 'NOPE' = closed.code
// @ts-expect-error the status is its literal
export const wrongStatus: 500 = new coreErrors.FST_PG_POOL_ACQUIRE_TIMEOUT().statusCode
// @ts-expect-error no such error
export const missing = errors.FST_PG_POOL_NO_SUCH_CODE
// @ts-expect-error PgPoolErrorCode is the codes, not any string
export const anyCode: PgPoolErrorCode = 'NOT_A_CODE'
`

describe('what a stranger compiles against', () => {
  // Before the fix, under moduleResolution bundler (module esnext or preserve: Vite, tsup, esbuild/tsx
  // setups), the two marked lines about `code` and `statusCode` compile: each error constructor
  // of `errors` (the umbrella's and the core's) is `any`, so `new errors.X()` is `any` and
  // `catch (e) { if (e.code === ...) }` narrowing, literal codes and statuses are gone. tsc
  // reports 2 x TS2578 "Unused '@ts-expect-error' directive" (the same fixture compiles cleanly
  // under nodenext: consumer-held.test.ts). Cause: the emitted
  // errors.d.ts (core, metrics, backpressure) is `import createError from '@fastify/error'` with
  // `createError.FastifyErrorConstructor<...>`; @fastify/error is CommonJS (`export =` a
  // function merged with a namespace that also exports `default`), and under bundler resolution
  // the default import is that `default` member (a value, no namespace), so the type does not
  // resolve (TS2503, hidden by skipLibCheck) and degrades to any.
  // packages/core/src/errors.ts:1 (also metrics/src/errors.ts:1, backpressure/src/errors.ts:2).
  test.each([
    ['esnext', 'bundler'],
    ['preserve', 'bundler'],
  ])(
    'module %s, moduleResolution %s: the errors keep their code and status types',
    async (module, resolution) => {
      const fixture = fixtureDir(dir, `errors-${module}`)
      writeFiles(fixture, { 'errors.ts': errorsFixture })
      const result = await tsc(
        dir,
        fixture,
        [...strict, '--module', module, '--moduleResolution', resolution, '--skipLibCheck'],
        ['errors.ts'],
      )
      expect(result.errors).toEqual([])
      expect(result.code).toBe(0)
    },
    120_000,
  )

  // Before the fix (moduleResolution bundler, skipLibCheck false): 24 x TS2503 "Cannot find namespace
  // 'createError'" in node_modules/@fastify-pg-pool/{core,metrics,backpressure}/dist/errors.d.ts
  // (the same cause as above). Under nodenext the same files have none.
  test('module esnext, moduleResolution bundler, skipLibCheck false: the shipped declarations have no errors', async () => {
    const fixture = fixtureDir(dir, 'libcheck-bundler')
    writeFiles(fixture, { 'errors.ts': errorsFixture })
    const result = await tsc(
      dir,
      fixture,
      [...strict, '--module', 'esnext', '--moduleResolution', 'bundler', '--skipLibCheck', 'false'],
      ['errors.ts'],
    )
    const ours = result.errors.filter((line) => /node_modules\/(@fastify-pg-pool\/|fastify-pg-pool\/)/.test(line))
    expect(ours).toEqual([])
  }, 120_000)

  // Before the fix, in a CommonJS TypeScript project (module commonjs, moduleResolution node10, no
  // esModuleInterop: the settings of many existing Fastify apps), `app.db` and `request.db` are
  // not callable: "TS2349: This expression is not callable. Type 'PoolDb' has no call
  // signatures" (and RequestDb likewise); the program runs fine (require() of the ESM build).
  // Cause: the declarations default-import postgres.js's CommonJS types
  // (`import type postgres from 'postgres'` in dist/types.d.ts, from packages/core/src/types.ts:2),
  // which without esModuleInterop has no default export; PoolDb/LeaseDb extend
  // `postgres.ISql<{}>`, which then resolves to nothing. Fastify's own types work in that setup.
  test('module commonjs, moduleResolution node10 (no esModuleInterop): app.db and request.db are callable', async () => {
    const fixture = fixtureDir(dir, 'cjs-node10')
    writeFiles(fixture, {
      'package.json': '{ "type": "commonjs" }\n',
      'server.ts': `
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'

export async function main(): Promise<void> {
  const app = Fastify()
  await app.register(pgPool, { connection: process.env.DATABASE_URL })
  const rows = await app.db<{ one: number }[]>\`select 1 as one\`
  const one: number | undefined = rows[0]?.one
  app.get('/', async (request) => request.db\`select \${one ?? 0}::int as n\`)
  await app.close()
}
`,
    })
    const result = await tsc(
      dir,
      fixture,
      [...strict, '--module', 'commonjs', '--moduleResolution', 'node10', '--skipLibCheck'],
      ['server.ts'],
    )
    expect(result.errors).toEqual([])
  }, 120_000)

  // Before the fix: `connection: { idle_timeout: 5 }` (and max_lifetime, debug, timeout) compiles, as
  // `connection` is typed `string | postgres.Options<{}>` (packages/core/src/types.ts, the
  // `connection` field of PgPoolCoreOptions), while register refuses each with
  // FST_PG_POOL_INVALID_OPTION ("connection.idle_timeout: is managed by the pool; use the pool
  // options"; `timeout`: "unknown option") — packages/core/src/options.ts ownedConnectionKeys and
  // postgresOptionKeys. The suite's rule (test/options/register.test-d.ts) is that an option
  // register refuses fails the build too. tsc reports 4 x TS2578 (unused directive).
  test('connection options that register refuses are type errors too', async () => {
    for (const [key, value] of [
      ['idle_timeout', 5],
      ['max_lifetime', 60],
      ['debug', true],
      ['timeout', 5],
    ] as const) {
      const app = Fastify()
      const refused = await app
        .register(pgPoolCore, { connection: { host: '127.0.0.1', [key]: value }, pool: { lazy: true } })
        .ready()
        .then(
          () => 'registered',
          (error: { code?: string }) => error.code,
        )
      await app.close().catch(() => {})
      expect(refused, key).toBe('FST_PG_POOL_INVALID_OPTION')
    }
    const fixture = fixtureDir(dir, 'owned-connection-keys')
    writeFiles(fixture, {
      'server.ts': `
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import pgPoolCore from '@fastify-pg-pool/core'

const app = Fastify()
// @ts-expect-error the pool owns idle_timeout (pool.idleTimeout)
await app.register(pgPool, { connection: { host: 'db', idle_timeout: 5 } })
// @ts-expect-error the pool owns max_lifetime (pool.maxLifetime)
await app.register(pgPoolCore, { connection: { host: 'db', max_lifetime: 60 } })
// @ts-expect-error the pool owns debug
await app.register(pgPoolCore, { connection: { host: 'db', debug: true } })
// @ts-expect-error timeout is refused as unknown
await app.register(pgPoolCore, { connection: { host: 'db', timeout: 5 } })
// what register accepts compiles
await app.register(pgPoolCore, { connection: { host: 'db', port: 5432, connect_timeout: 5, prepare: false } })
`,
    })
    const result = await tsc(
      dir,
      fixture,
      [...strict, '--module', 'nodenext', '--moduleResolution', 'nodenext', '--skipLibCheck'],
      ['server.ts'],
    )
    expect(result.errors).toEqual([])
  }, 120_000)

  // Before the fix: "TS2339: Property 'replica' does not exist on type 'PoolDb'". `app.db.replica` is
  // documented (packages/core/README.md "Read replicas and failover": "request.db.replica,
  // app.db.replica"; docs/replicas.md: "Jobs: app.db.replica`...`", the routing table) and set at
  // runtime (packages/core/src/plugin.ts:333), but PoolDb (packages/core/src/types.ts, `interface
  // PoolDb`) has no `replica`; LeaseDb has one. The suite's own tests cast their way to it
  // (test/regressions/promoted-replica-writes.test.ts:54, read-only-on-primary.test.ts:86).
  test('app.db.replica, documented for jobs, is part of the type', async () => {
    const fixture = fixtureDir(dir, 'app-db-replica')
    writeFiles(fixture, {
      'server.ts': `
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'

const app = Fastify()
await app.register(pgPool, {
  connection: 'postgres://app@db-primary:5432/app',
  replicas: ['postgres://app@db-replica-0:5432/app'],
})
// docs/replicas.md: "Jobs: app.db.replica\`...\` reads through the same routing."
const replica = app.db.replica
export const rows = replica === undefined ? [] : await replica<{ id: number }[]>\`select 1 as id\`
`,
    })
    const result = await tsc(
      dir,
      fixture,
      [...strict, '--module', 'nodenext', '--moduleResolution', 'nodenext', '--skipLibCheck'],
      ['server.ts'],
    )
    expect(result.errors).toEqual([])
  }, 120_000)

  // Before the fix both routes compile, and the backpressure plugin refuses both when they are declared
  // (FST_PG_POOL_INVALID_OPTION "config.backpressure.priorty of /a: unknown option; did you mean
  // priority?", "config.backpressure of /b: expected false or an object, got true"). Fastify
  // intersects a route's config literal with FastifyContextConfig, so every key of the literal is
  // known; the core made each form of `config.db` require a key for that reason
  // (test/core/route-config.test-d.ts, "Issue 17, item 8"), but RouteBackpressureConfig
  // (packages/backpressure/src/options.ts:10, `false | { priority?: Priority }`) has only an
  // optional key, and `true & { priority?: ... }` is not never. tsc: 3 x TS2578.
  test('config.backpressure: a misspelled key or true fails the build, as register refuses them', async () => {
    for (const config of [{ priorty: 'low' }, true]) {
      const app = Fastify()
      await app.register(pgPoolCore, { connection: 'postgres://x@127.0.0.1:1/x', pool: { lazy: true } })
      await app.register(pgPoolBackpressure, { process: false })
      let refused: string | undefined
      try {
        app.get('/a', { config: { backpressure: config as never } }, async () => 1)
        await app.ready()
      } catch (error) {
        refused = (error as { code?: string }).code
      }
      await app.close().catch(() => {})
      expect(refused, JSON.stringify(config)).toBe('FST_PG_POOL_INVALID_OPTION')
    }
    const fixture = fixtureDir(dir, 'backpressure-route-config')
    writeFiles(fixture, {
      'server.ts': `
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'

const app = Fastify()
await app.register(pgPool, { connection: process.env.DATABASE_URL })
const handler = async () => null
// @ts-expect-error priorty is not a config.backpressure option
app.get('/a', { config: { backpressure: { priorty: 'low' } } }, handler)
// @ts-expect-error config.backpressure is false or options, not true
app.get('/b', { config: { backpressure: true } }, handler)
// @ts-expect-error priorty is not a config.backpressure option
app.route({ method: 'GET', url: '/c', config: { backpressure: { priorty: 'low' } }, handler })
app.get('/ok', { config: { backpressure: { priority: 'low' } } }, handler)
app.get('/off', { config: { backpressure: false } }, handler)
`,
    })
    const result = await tsc(
      dir,
      fixture,
      [...strict, '--module', 'nodenext', '--moduleResolution', 'nodenext', '--skipLibCheck'],
      ['server.ts'],
    )
    expect(result.errors).toEqual([])
  }, 120_000)

  // Before the fix, in an app that installs the umbrella with pnpm (strict node_modules: the app resolves
  // only what it depends on), the augmentation docs/migrating-from-fastify-postgres.md gives
  // umbrella users ("In TypeScript, declare the names once for exact types: declare module
  // '@fastify-pg-pool/core' { interface PgPoolInstances { reporting: true } }", after
  // `app.register(pgPool, { name: 'reporting', ... })` from 'fastify-pg-pool') fails: "TS2664:
  // Invalid module name in augmentation, module '@fastify-pg-pool/core' cannot be found", and
  // `app.dbs.reporting` stays `PoolDb | undefined` (TS2322). With npm's hoisting it compiles by
  // luck. Augmenting 'fastify-pg-pool' (which re-exports the interface) works in both: the doc
  // names the wrong module for umbrella users (or the umbrella should say so).
  test('pnpm, umbrella only: the documented PgPoolInstances augmentation compiles', async () => {
    const dir = await pnpmProject('umbrella', {
      fastify: '^5.12.8',
      typescript: '~5.9.3',
      '@types/node': '^20.19.43',
    })
    const fixture = fixtureDir(dir, 'augment-instances')
    writeFiles(fixture, {
      'server.ts': `
import Fastify from 'fastify'
import pgPool, { type PoolDb } from 'fastify-pg-pool'

// docs/migrating-from-fastify-postgres.md, as written:
declare module 'fastify-pg-pool' {
  interface PgPoolInstances {
    reporting: true
  }
}

const app = Fastify()
await app.register(pgPool, { connection: process.env.DATABASE_URL })
await app.register(pgPool, { name: 'reporting', connection: process.env.REPORTING_URL })
export const exact: PoolDb = app.dbs.reporting
`,
    })
    const result = await tsc(
      dir,
      fixture,
      [...strict, '--module', 'nodenext', '--moduleResolution', 'nodenext', '--skipLibCheck'],
      ['server.ts'],
    )
    expect(result.errors).toEqual([])
  }, 300_000)

  // Before the fix, with exactOptionalPropertyTypes (which the workspace itself compiles with), options
  // read from the environment (`pool: { max: maybe }`, `health: { pingTimeout: undefined }`, ...)
  // fail: TS2769 "Type 'undefined' is not assignable to type 'number'" for pool.max,
  // health.pingTimeout, metrics.path, backpressure.target; register accepts each (undefined is
  // the default). The core's top-level options are typed `?: T | undefined` for exactly this
  // (packages/core/src/types.ts PgPoolCoreOptions) but PoolOptions (core/src/options.ts:26),
  // PgPoolHealthOptions, PgPoolMetricsOptions and PgPoolBackpressureOptions are not.
  test('exactOptionalPropertyTypes: an option given as undefined compiles, as register accepts it', async () => {
    const app = Fastify()
    const max = process.env.STRANGER_UNSET_MAX ? Number(process.env.STRANGER_UNSET_MAX) : undefined
    await app.register(pgPool, {
      connection: 'postgres://x@127.0.0.1:1/x',
      pool: { lazy: true, max } as never,
      health: { pingTimeout: undefined } as never,
      metrics: { path: undefined } as never,
      backpressure: { target: undefined, process: false } as never,
    })
    await app.ready()
    await app.close()
    const fixture = fixtureDir(dir, 'exact-optional')
    writeFiles(fixture, {
      'server.ts': `
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'

const app = Fastify()
const max = process.env.PGMAX ? Number(process.env.PGMAX) : undefined
const pingTimeout = process.env.PING_TIMEOUT ? Number(process.env.PING_TIMEOUT) : undefined
await app.register(pgPool, {
  connection: process.env.DATABASE_URL,
  pool: { max },
  health: { pingTimeout },
  metrics: { path: process.env.METRICS_PATH },
  backpressure: { target: undefined },
})
`,
    })
    const result = await tsc(
      dir,
      fixture,
      [
        ...strict,
        '--module',
        'nodenext',
        '--moduleResolution',
        'nodenext',
        '--exactOptionalPropertyTypes',
        '--skipLibCheck',
      ],
      ['server.ts'],
    )
    expect(result.errors).toEqual([])
  }, 120_000)
})

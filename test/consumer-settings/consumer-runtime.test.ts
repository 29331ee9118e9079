import { mkdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { fixtureDir, project, run, writeFiles } from './consumer-kit.js'

// Found by hostile probing (round nine, stranger). What a stranger's app does at run time with the
// packages as npm installs them (consumer-kit.ts: packed with pnpm, installed with plain npm
// outside the workspace, everything else from the registry), against this file's own database.

let db: TestDatabase
let runtime: string
beforeAll(async () => {
  db = await createTestDatabase()
  runtime = await project('runtime', { deps: ['fastify@^5.12.8', 'esbuild@^0.28.2'] })
}, 600_000)
const cleanups: (() => void)[] = []
afterAll(async () => {
  for (const cleanup of cleanups) cleanup()
  await db.drop()
})

/** The postgres.js the core got (its version), printed by a fixture. */
const postgresVersion = `
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
const main = createRequire(import.meta.resolve('@fastify-pg-pool/core')).resolve('postgres')
const root = main.slice(0, main.lastIndexOf('/node_modules/postgres/') + '/node_modules/postgres'.length)
export const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version
`

describe('the installed packages at run time', () => {
  // Before: the core README described only postgres.js 3.4.9's outcome (500 COMMIT_FAILED,
  // nothing committed), while npm gives strangers the newest of the core's range (3.4.10), where
  // the statement fails alone and the handler that caught it commits the rest (200), and the CI
  // never ran that case on 3.4.10. The README now gives both; the versions leg runs the suite's
  // tests of it on each end of the range. Here: what a fresh install does is what the README says
  // for the version it got.
  test('a fresh install keeps the documented route-transaction outcome of an unbuildable statement, for the postgres.js it got', async () => {
    const fixture = fixtureDir(runtime, 'unbuildable-in-transaction')
    writeFiles(fixture, {
      'postgres-version.mjs': postgresVersion,
      'app.mjs': `
import Fastify from 'fastify'
import pgPoolCore from '@fastify-pg-pool/core'
import { version } from './postgres-version.mjs'

const app = Fastify()
await app.register(pgPoolCore, {
  connection: process.env.DATABASE_URL,
  pool: { max: 1, idleTimeout: 0, statementTimeout: 4000 },
})
await app.db\`create table if not exists stranger_notes (note text)\`
await app.db\`truncate stranger_notes\`
app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
  const results = await Promise.allSettled([
    request.db\`insert into stranger_notes values (\${'first'}) returning note\`,
    request.db\`insert into stranger_notes values ('second') returning note\`,
    request.db\`select 1 as c where 1 in \${request.db([1, undefined])}\`,
  ])
  return results.map((r) => (r.status === 'fulfilled' ? r.value[0] : r.reason.code))
})
const res = await app.inject({ method: 'POST', url: '/tx' })
const rows = await app.db\`select note from stranger_notes order by note\`
console.log(JSON.stringify({ postgres: version, status: res.statusCode, code: res.json().code, committed: rows.map((r) => r.note) }))
await app.close()
`,
    })
    const result = await run(process.execPath, ['app.mjs'], {
      cwd: fixture,
      env: { DATABASE_URL: db.url },
      timeout: 60_000,
    })
    expect(result.code, result.output).toBe(0)
    const outcome = JSON.parse(result.stdout.trim().split('\n').pop() as string) as Record<string, unknown>
    expect(
      { status: outcome.status, code: outcome.code, committed: outcome.committed },
      JSON.stringify(outcome),
    ).toEqual(
      outcome.postgres === '3.4.9'
        ? { status: 500, code: 'FST_PG_POOL_COMMIT_FAILED', committed: [] }
        : { status: 200, code: undefined, committed: ['first', 'second'] },
    )
  }, 120_000)

  // Before: the bundle exited 1 at register with an uncoded ERR_MODULE_NOT_FOUND for
  // '@fastify-pg-pool/otel', which the umbrella loads at run time (a name in a variable: its peer
  // @opentelemetry/api is optional), where no bundler follows; the README claimed the packages run
  // "from the bundle alone". Now: register refuses with a coded error that says what to do, and
  // the README says it; bundled with the otel package external (installed beside), it runs.
  test('the umbrella with otel: {} in an esbuild bundle: a coded refusal that says what to do; with the otel package external, it runs', async () => {
    const fixture = fixtureDir(runtime, 'bundle-otel')
    writeFiles(fixture, {
      'server.mjs': `
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'

const app = Fastify()
await app.register(pgPool, { connection: process.env.DATABASE_URL, pool: { max: 2 }, otel: {} })
const ready = await app.inject('/health/ready')
console.log(JSON.stringify({ ready: ready.statusCode, otel: typeof app.pgPoolOtel }))
await app.close()
`,
    })
    // Outside the project: the bundle runs alone, with no node_modules above it.
    const out = join(tmpdir(), `fastify-pg-pool-consumer-bundle-${process.pid}-${Date.now()}`)
    rmSync(out, { recursive: true, force: true })
    mkdirSync(out)
    cleanups.push(() => rmSync(out, { recursive: true, force: true }))
    const bundle = (outfile: string, external: string[]) =>
      run(
        join(runtime, 'node_modules/.bin/esbuild'),
        [
          'server.mjs',
          '--bundle',
          '--platform=node',
          '--format=esm',
          `--outfile=${outfile}`,
          '--log-level=warning',
          ...external.map((name) => `--external:${name}`),
          // The README's banner (Fastify's CommonJS needs a require in an ESM bundle).
          "--banner:js=import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
        ],
        { cwd: fixture, timeout: 120_000 },
      )
    const alone = await bundle(join(out, 'server.mjs'), [])
    expect(alone.code, alone.output).toBe(0)
    const refused = await run(process.execPath, ['server.mjs'], {
      cwd: out,
      env: { DATABASE_URL: db.url },
      timeout: 60_000,
    })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain('FST_PG_POOL_INVALID_OPTION')
    expect(refused.stderr).toContain('--external:@fastify-pg-pool/otel')
    // The README's way: the otel package left out of the bundle, installed beside it.
    const beside = await bundle(join(fixture, 'bundle.mjs'), ['@fastify-pg-pool/otel'])
    expect(beside.code, beside.output).toBe(0)
    const result = await run(process.execPath, ['bundle.mjs'], {
      cwd: fixture,
      env: { DATABASE_URL: db.url },
      timeout: 60_000,
    })
    expect({ code: result.code, stderr: result.stderr.split('\n').slice(0, 6).join('\n') }).toEqual({
      code: 0,
      stderr: '',
    })
    expect(JSON.parse(result.stdout.trim())).toEqual({ ready: 200, otel: 'object' })
  }, 180_000)

  // Before: the core README said the error a handler catches is "a postgres.PostgresError";
  // an app with a postgres.js of its own (npm gives it the registry's latest, 4.x, and nests the
  // core's 3.4.x under the core) gets another class. The README now says to test
  // `instanceof DatabaseError` (the core's export) or its name, which hold.
  test('an app with postgres.js of its own: a query error is a DatabaseError (instanceof, name), as documented', async () => {
    const own = await project('own-postgres', { deps: ['fastify@^5.12.8', 'postgres'] })
    const fixture = fixtureDir(own, 'instanceof')
    writeFiles(fixture, {
      'app.mjs': `
import Fastify from 'fastify'
import pgPoolCore, { DatabaseError } from '@fastify-pg-pool/core'
import postgres from 'postgres'

const app = Fastify()
await app.register(pgPoolCore, { connection: process.env.DATABASE_URL, pool: { max: 1 } })
try {
  await app.db\`select 1 / 0\`
} catch (error) {
  console.log(JSON.stringify({
    code: error.code,
    databaseError: error instanceof DatabaseError,
    name: error.name,
    ownClass: error instanceof postgres.PostgresError,
  }))
}
await app.close()
`,
    })
    const result = await run(process.execPath, ['app.mjs'], {
      cwd: fixture,
      env: { DATABASE_URL: db.url },
      timeout: 60_000,
    })
    expect(result.code, result.output).toBe(0)
    // ownClass: the app's postgres.js is another copy (documented); the README's tests hold.
    expect(JSON.parse(result.stdout.trim())).toMatchObject({
      code: '22012',
      databaseError: true,
      name: 'DatabaseError',
    })
  }, 300_000)
})

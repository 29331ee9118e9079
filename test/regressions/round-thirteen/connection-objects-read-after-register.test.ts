// DEFECT (probe-options, low). What the user does: registers the core with `connection` given as
// postgres.js options holding an object (`transform`, also `types` and `ssl`), and later changes
// that object (a shared config object reused for another client, a test that tweaks it, code that
// builds it in steps). What they see: connections opened after the change follow the new value,
// connections opened before keep the old: the same route answers `some_column` on one connection
// and `someColumn` on the other, depending on which connection a request got. What they should
// see: the options as they were at register, on every connection (the suite validates and
// freezes its options at register: `pool`, `replica` and `errorMapping` are copied; this one is
// not). Cause: packages/core/src/options.ts resolveConnection keeps `rest` (a shallow copy of
// `connection`) whose `transform`, `types` and `ssl` are the user's own objects, and
// packages/core/src/connection-factory.ts:86-96 builds a new postgres.js client from them for
// every server connection (postgres.js parses `transform` in each `postgres()` call). Suggested
// fix: copy (and freeze) `transform` (its column/value/row parts), `types` (each entry) and `ssl`
// at register, or build the postgres.js options once and reuse the parsed result.
// Round thirteen: failed on a718e61 (the code before its fix, both servers); passes after it.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db?.drop())

function fields(url: string) {
  const parsed = new URL(url)
  const password = decodeURIComponent(parsed.password)
  return {
    host: parsed.hostname,
    port: Number(parsed.port || 5432),
    user: decodeURIComponent(parsed.username),
    database: parsed.pathname.slice(1),
    ...(password === '' ? {} : { password }),
  }
}

test('a transform object changed after register changes what later connections return', async () => {
  const transform: postgres.Options<{}>['transform'] & Record<string, unknown> = {}
  const app = Fastify()
  await app.register(pgPoolCore, { connection: { ...fields(db.url), transform }, pool: { max: 2 } })
  app.get('/', async (request) => {
    const [row] = await request.db`select 1 as some_column, pg_backend_pid() as pid, pg_sleep(0.2)::text as slept`
    return row
  })
  try {
    const first = (await app.inject('/')).json() as Record<string, unknown>
    expect(Object.keys(first)).toContain('some_column')
    // After register, the app's code changes the object it passed.
    transform.column = postgres.toCamel
    // Two at once: one gets the connection opened before the change, the other a new one.
    const both = await Promise.all([app.inject('/'), app.inject('/')])
    const bodies = both.map((response) => response.json() as Record<string, unknown>)
    expect(new Set(bodies.map((body) => body.pid)).size).toBe(2)
    // Fails: the new connection's row reads `someColumn`.
    for (const body of bodies) expect(Object.keys(body)).toContain('some_column')
  } finally {
    await app.close()
  }
})

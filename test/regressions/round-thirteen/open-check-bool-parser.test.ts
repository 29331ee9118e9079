// DEFECT (attack-options, low). What the user does: runs behind PgBouncer (`pool.pgbouncer: true`,
// where the pool sends no bytea_output/extra_float_digits startup parameters and relies on its
// open() check, docs/pgbouncer-and-sizing.md) with a `types` parser for booleans of its own, e.g.
// MySQL-style 0/1 (`bool: { to: 16, from: [16], parse: (x) => (x === 't' ? 1 : 0), ... }`); the
// database or role has `bytea_output = 'escape'` (or extra_float_digits = 0). What they see: the
// connection is accepted and every bytea is read as other bytes (\xdeadbeef as 0x36), every float
// rounded, with no error; without the parser the same database is refused
// (FST_PG_POOL_CONNECT_FAILED, cause UNREADABLE_SETTINGS). What they should see: the same refusal
// whatever parsers the app installs. Cause: packages/core/src/postgres-adapter.ts:874-881 reads
// OPEN_SQL with `.values()`, through the app's parsers, and refuses only on `row[1] === false`;
// the app's bool parser turns false into 0. Suggested fix: read OPEN_SQL with `.raw()` (Buffers,
// out of reach of types and transforms, as the onConnect capture already does: textRows in
// session-reset.ts) and compare the text to 't', or return the flag as an int4 and compare 1.
// Round thirteen, second round: failed on 1fd7255 (both servers); passes after its fix.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
let name: string
const apps: FastifyInstance[] = []

beforeAll(async () => {
  db = await createTestDatabase()
  name = new URL(db.directUrl).pathname.slice(1)
  await db.sql.unsafe(`alter database ${name} set bytea_output = 'escape'`)
})
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close()
})
afterAll(() => db?.drop())

function options(types: Record<string, unknown> | undefined): Record<string, unknown> {
  const parsed = new URL(db.directUrl)
  return {
    host: parsed.hostname,
    port: Number(parsed.port),
    database: parsed.pathname.slice(1),
    username: decodeURIComponent(parsed.username),
    ...(parsed.password === '' ? {} : { password: decodeURIComponent(parsed.password) }),
    ...(types === undefined ? {} : { types }),
  }
}

/** The refusal's cause code, or what a request read. */
async function outcome(types: Record<string, unknown> | undefined): Promise<{ refused: unknown } | { read: string }> {
  const app = Fastify()
  apps.push(app)
  try {
    await app.register(pgPoolCore, { connection: options(types) as never, pool: { max: 1, pgbouncer: true } })
    app.get('/read', async (request) => {
      const [row] = await request.db.unsafe(`select '\\xdeadbeef'::bytea as b`)
      return { b: Buffer.from(row?.b as Uint8Array).toString('hex') }
    })
    await app.ready()
  } catch (error) {
    return { refused: (error as { cause?: { code?: unknown } }).cause?.code }
  }
  return { read: (await app.inject('/read')).json().b }
}

const zeroOne = {
  bool: {
    to: 16,
    from: [16],
    serialize: (x: unknown) => (x ? 't' : 'f'),
    parse: (x: string) => (x === 't' ? 1 : 0),
  },
}

describe("the open check of bytea_output, whatever the app's parsers", () => {
  test('held: without a bool parser the connection is refused', async () => {
    expect(await outcome(undefined)).toEqual({ refused: 'UNREADABLE_SETTINGS' })
  })

  test('with a 0/1 bool parser: refused too, never misread', async () => {
    const result = await outcome(zeroOne)
    if ('refused' in result) expect(result.refused).toBe('UNREADABLE_SETTINGS')
    else expect(result.read).toBe('deadbeef')
  })
})

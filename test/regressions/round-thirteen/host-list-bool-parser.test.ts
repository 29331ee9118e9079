// DEFECT (third-b, medium). What the user does: gives the primary as a host list for failover
// (`host: 'db1:5432,db2:5432'`, or a URL's `h1,h2`; README "Across a failover": each new
// connection "skips one in recovery"), together with an app `types` parser the pool accepts elsewhere,
// the MySQL-style 0/1 booleans round thirteen made the open check safe against
// (open-check-bool-parser: `bool: { to: 16, from: [16], parse: (x) => (x === 't' ? 1 : 0),
// serialize }`). What they see: no connection ever opens: every host, a primary accepting writes,
// is refused as "in recovery (a standby)" (NOT_PRIMARY), register fails with
// FST_PG_POOL_CONNECT_FAILED; the same hosts without the parser, or a single host with it, work.
// What they should see: the primary taken, requests served. Cause:
// packages/core/src/connection-factory.ts:158-160 reads IN_RECOVERY_SQL with `.values()`, through
// the app's parsers (and value/row transforms), and refuses on `row?.[0] !== false`: the parser
// made false into 0. Suggested fix: read it raw by position and compare the text to 'f' (as
// postgres-adapter.ts open() does for OPEN_SQL since round thirteen), or fold
// `pg_is_in_recovery()` into OPEN_SQL's raw row.
// Round thirteen, third round: failed on 381590e (both servers); passes after its fix.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
const apps: FastifyInstance[] = []

beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close()
})
afterAll(() => db?.drop())

const zeroOne = {
  bool: {
    to: 16,
    from: [16],
    serialize: (x: unknown) => (x ? 't' : 'f'),
    parse: (x: string) => (x === 't' ? 1 : 0),
  },
}

/** The primary twice, as a host list (both entries the same server, which is no standby). */
function hostList(types: Record<string, unknown> | undefined): Record<string, unknown> {
  const parsed = new URL(db.directUrl)
  const entry = `${parsed.hostname}:${parsed.port}`
  return {
    host: `${entry},${entry}`,
    database: parsed.pathname.slice(1),
    username: decodeURIComponent(parsed.username),
    ...(parsed.password === '' ? {} : { password: decodeURIComponent(parsed.password) }),
    ...(types === undefined ? {} : { types }),
  }
}

async function outcome(types: Record<string, unknown> | undefined): Promise<unknown> {
  const app = Fastify()
  apps.push(app)
  try {
    await app.register(pgPoolCore, { connection: hostList(types) as never, pool: { max: 1 } })
    app.get('/flag', async (request) => {
      const [row] = await request.db.unsafe('select pg_is_in_recovery() as standby')
      return row
    })
    await app.ready()
  } catch (error) {
    const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause
    return { refused: (error as { code?: unknown }).code, cause: cause?.code, message: cause?.message }
  }
  const reply = await app.inject('/flag')
  return { status: reply.statusCode, body: reply.json() }
}

describe('a host list for the primary, with an app bool parser', () => {
  test('held: without the parser the primary is taken', async () => {
    expect(await outcome(undefined)).toEqual({ status: 200, body: { standby: false } })
  })

  test('with a 0/1 bool parser the primary is taken too', async () => {
    expect(await outcome(zeroOne)).toEqual({ status: 200, body: { standby: 0 } })
  })
})

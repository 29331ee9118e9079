import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

// Hostile probing, round twelve (options, second round on commit 6528993).
//
// Docs: packages/core/README.md "Connection": "What postgres.js would ignore or misread is refused
// at `register` with `FST_PG_POOL_INVALID_OPTION` ... Every value of an options object is checked
// against what postgres.js takes (... `connection` an object of strings, numbers and booleans, ...)".
//
// What happens: checkConnectionValues (packages/core/src/options.ts) takes any string, number or
// boolean as a startup parameter, but postgres.js writes its startup message with
// `.filter(([, v]) => v)` (postgres/src/connection.js StartupMessage): `false`, `0` and `''` are
// dropped without a word. `connection: { connection: { jit: false } }` (the usual advice for OLTP)
// leaves JIT on; `{ lock_timeout: 0 }` against a database default of 5 s leaves 5 s; the session
// never gets what register accepted. Expected: the value reaches the session (sent as 'off' / '0' /
// "''"), or register refuses it naming connection.connection.<name>.

let db: TestDatabase
let dbName: string
beforeAll(async () => {
  db = await createTestDatabase()
  dbName = decodeURIComponent(new URL(db.directUrl).pathname.slice(1))
  await db.admin.unsafe(`alter database ${dbName} set lock_timeout = '5s'`)
  await db.admin.unsafe(`alter database ${dbName} set jit = on`)
})
afterAll(async () => {
  await db?.drop()
})

function parts() {
  const u = new URL(db.directUrl)
  return {
    host: u.hostname,
    port: Number(u.port),
    database: decodeURIComponent(u.pathname.slice(1)),
    username: decodeURIComponent(u.username),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
  }
}

async function setting(startup: Record<string, unknown>, name: string) {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection: { ...parts(), connection: startup } as never, pool: { max: 1 } })
    app.get('/q', async (request) => (await request.db`select current_setting(${name}) as value`)[0])
    await app.ready()
    return { session: ((await app.inject('/q')).json() as { value: string }).value }
  } catch (error) {
    const e = error as Error & { code?: string }
    return { refused: `${e.code}: ${e.message}` }
  } finally {
    await app.close().catch(() => {})
  }
}

function expectHonouredOrRefused(found: { session?: string; refused?: string }, name: string, value: string) {
  if (found.refused !== undefined) {
    expect(found.refused).toContain(`FST_PG_POOL_INVALID_OPTION: Invalid option connection.connection.${name}`)
    return
  }
  expect(found).toEqual({ session: value })
}

describe('startup parameters register takes as booleans and numbers', () => {
  test('jit: false reaches the session (or is refused)', async () => {
    expectHonouredOrRefused(await setting({ jit: false }, 'jit'), 'jit', 'off')
  })

  test('lock_timeout: 0 reaches the session over the database default (or is refused)', async () => {
    expectHonouredOrRefused(await setting({ lock_timeout: 0 }, 'lock_timeout'), 'lock_timeout', '0')
  })

  test("control: lock_timeout: 1500 and jit: 'off' reach the session", async () => {
    expect(await setting({ lock_timeout: 1500 }, 'lock_timeout')).toEqual({ session: '1500ms' })
    expect(await setting({ jit: 'off' }, 'jit')).toEqual({ session: 'off' })
  })
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

// Hostile probing, round twelve (options, second round on commit 6528993: `host` values).
//
// Docs: packages/core/README.md "Connection": "`connection` takes a `postgres://` URL or postgres.js
// options (TLS with `ssl`, a host list, ...)"; "Every value of an options object is checked against
// what postgres.js takes (`host` a name or a list of them, ...) and refused by name otherwise"; a
// port in "a `host` string such as `db:5433`" is checked. ConnectionOptions (options.ts):
// `host?: string | readonly string[]` ("A host, or a list tried in turn"), `port?: number | string |
// readonly (number | string)[]`. options.ts checkHostPort: "A `host` string postgres.js splits itself
// (`h1:5432,h2`): each entry's port".
//
// What happens (the new value table takes all of these):
// 1. `host: [a, b]` with `port` a number (or absent), and `host: ['a']` with `port: 5432`: register
//    rejects with a bare TypeError `host.split is not a function` (no code, no option named):
//    postgres.js reads `port: Array.isArray(port) ? port : host.split(',')...`, and the pool passes
//    the list on as given (only the IPv6 path and the test suite give `port` as a list). The same
//    class the fix closed for `host: 5`.
// 2. `host: ['h:5432', 'h:5433']` (ports inside the entries): the same TypeError.
// 3. `host: 'h:5432,h:5433'` (postgres.js's own string host list, whose ports checkHostPort
//    checks): its two colons make options.ts take the whole string for one IPv6 literal
//    (`isIpv6(rest.host)` on the string, not on each entry): register fails
//    FST_PG_POOL_CONNECT_FAILED, `getaddrinfo ENOTFOUND h:5432,h:5433`. postgres.js alone connects.
// Expected: the app connects (or, for 2, a coded refusal naming connection.host).

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
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

async function outcome(connection: Record<string, unknown>) {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection: connection as never, pool: { max: 1, connectTimeout: 5_000 } })
    app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
    await app.ready()
    const res = await app.inject('/q')
    return { status: res.statusCode, body: res.json() as unknown }
  } catch (error) {
    const e = error as Error & { code?: string }
    return { refused: `${e.code}: ${e.message}` }
  } finally {
    await app.close().catch(() => {})
  }
}

describe('host lists in the options form', () => {
  test('host: [h, h] with port a number (the typed form) connects', async () => {
    const { host, ...rest } = parts()
    expect(await outcome({ ...rest, host: [host, host] })).toEqual({ status: 200, body: { one: 1 } })
  })

  test("host: ['h'] with port a number connects", async () => {
    const { host, ...rest } = parts()
    expect(await outcome({ ...rest, host: [host] })).toEqual({ status: 200, body: { one: 1 } })
  })

  test("host: ['h:port', 'h:port'] (ports inside): connects, or a coded refusal naming connection.host", async () => {
    const { host, port, ...rest } = parts()
    const found = await outcome({ ...rest, host: [`${host}:${port}`, `${host}:${port}`] })
    if ('refused' in found) {
      expect(found.refused).toMatch(/^FST_PG_POOL_INVALID_OPTION: Invalid option connection\.host/)
      return
    }
    expect(found).toEqual({ status: 200, body: { one: 1 } })
  })

  test("host: 'h:port,h:port' (postgres.js's string host list) connects", async () => {
    const { host, port, ...rest } = parts()
    expect(await outcome({ ...rest, host: `${host}:${port},${host}:${port}` })).toEqual({
      status: 200,
      body: { one: 1 },
    })
  })

  test('control: host: [h, h] with port: [p, p] connects', async () => {
    const { host, port, ...rest } = parts()
    expect(await outcome({ ...rest, host: [host, host], port: [port, port] })).toEqual({
      status: 200,
      body: { one: 1 },
    })
  })
})

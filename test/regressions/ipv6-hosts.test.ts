import { createConnection, createServer, type Server } from 'node:net'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing, round 2 (options), failing before the fix. packages/core/README.md "Connection": `connection` takes a
// `postgres://` URL or postgres.js options, a host list included. An IPv6 literal is a valid host in
// both (RFC 3986 `[::1]`, libpq `postgresql://[::1]:5432/db`, `host=::1`), yet:
//
// - `postgres://user@[::1]:port/db` fails every connection: postgres.js (index.js parseOptions)
//   splits the host on ':' and connects to '[' (getaddrinfo ENOTFOUND [) — register rejects with
//   FST_PG_POOL_CONNECT_FAILED;
// - options `{ host: '::1', port }`: the same split leaves '' and postgres.js connects to
//   localhost (127.0.0.1) instead: another address than the one given;
// - a URL host list `[::1]:p1,[::1]:p2`: options.ts keeps the brackets in each entry's host, which
//   then goes the same way;
// - a URL host list without ports (`[::1],[::2]`) is refused as "not host[:port]": options.ts splits
//   each entry at its last ':', inside the brackets.
//
// Each test connects through a forwarder listening on ::1 only (to this file's database on
// 127.0.0.1), so reaching it proves the IPv6 address was used.

let db: TestDatabase
let forwarder: Server
let port: number
let forwarded = 0
let apps: FastifyInstance[] = []

beforeAll(async () => {
  db = await createTestDatabase()
  const target = new URL(db.directUrl)
  forwarder = createServer((client) => {
    forwarded++
    const upstream = createConnection(Number(target.port), target.hostname)
    client.pipe(upstream).pipe(client)
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
  })
  await new Promise<void>((resolve) => forwarder.listen(0, '::1', resolve))
  port = (forwarder.address() as { port: number }).port
})
afterEach(async () => {
  await Promise.all(apps.map((app) => app.close().catch(() => {})))
  apps = []
})
afterAll(async () => {
  await new Promise<void>((resolve) => forwarder.close(() => resolve()))
  await db.drop()
})

/** `userinfo@` of this file's database URL (already percent-encoded). */
function userinfo(): string {
  const parsed = new URL(db.directUrl)
  return parsed.password ? `${parsed.username}:${parsed.password}@` : `${parsed.username}@`
}
const database = () => new URL(db.directUrl).pathname

async function serve(connection: unknown): Promise<{ status: number | string; forwarded: number }> {
  const before = forwarded
  const app = Fastify()
  apps.push(app)
  app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
  const status = await app
    .register(pgPoolCore, { connection: connection as never, pool: { max: 1, connectTimeout: 5_000 } })
    .ready()
    .then(
      async () => (await app.inject('/q')).statusCode,
      (error: Error & { code?: string }) => `register: ${error.code} ${error.message}`,
    )
  return { status, forwarded: forwarded - before > 0 ? 1 : 0 }
}

describe('IPv6 literal hosts', () => {
  // Control (passes): the forwarder works, and postgres.js takes an IPv6 host as an array entry.
  test("control: options { host: ['::1'], port: [port] } connect there", async () => {
    const parsed = new URL(db.directUrl)
    const connection = {
      host: ['::1'],
      port: [port],
      database: database().slice(1),
      username: decodeURIComponent(parsed.username),
      ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
    }
    expect(await serve(connection)).toEqual({ status: 200, forwarded: 1 })
  })

  test('a URL with [::1]:port connects there', async () => {
    expect(await serve(`postgres://${userinfo()}[::1]:${port}${database()}`)).toEqual({ status: 200, forwarded: 1 })
  })

  test("options { host: '::1', port } connect there", async () => {
    const parsed = new URL(db.directUrl)
    const connection = {
      host: '::1',
      port,
      database: database().slice(1),
      username: decodeURIComponent(parsed.username),
      ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
    }
    expect(await serve(connection)).toEqual({ status: 200, forwarded: 1 })
  })

  test('a URL host list of [::1]:port entries connects', async () => {
    expect(await serve(`postgres://${userinfo()}[::1]:${port},[::1]:${port}${database()}`)).toEqual({
      status: 200,
      forwarded: 1,
    })
  })

  test('a URL host list of IPv6 hosts without ports is not refused as malformed', async () => {
    const app = Fastify()
    apps.push(app)
    const error = await app
      .register(pgPoolCore, { connection: 'postgres://app@[::1],[::2]/app', pool: { lazy: true } })
      .ready()
      .then(
        () => undefined,
        (e: Error & { code?: string }) => e,
      )
    expect(error?.message).toBeUndefined()
  })
})

import { createServer } from 'node:net'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../support/database.js'

// Hostile probing, round two of the operational fixes (9d75231: "PGSSL=disable/false is no TLS").
//
// 1. A TLS downgrade. What the user does: connects with a URL that asks for a verified TLS
// connection with `?sslrootcert=system` (core README, TLS: "`sslrootcert=system` means
// `verify-full`"), in an environment that happens to hold PGSSL=disable (or false): a base image's
// or a CI job's leftover. What they should get: TLS, verified, as before 9d75231 and as postgres.js
// does (the URL's setting wins over PGSSL). What they get: a plaintext connection (the first packet
// is a StartupMessage, not an SSLRequest), so a URL that demands verified TLS is downgraded by an
// environment variable. Cause: packages/core/src/options.ts resolveConnection, `ownSsl` looks for
// `sslmode=` or `ssl=` in the URL only; postgres.js also reads `sslrootcert=system` as
// ssl: 'verify-full', and the pool's `ssl: false` (an option) now overrides it. Suggested fix: count
// `sslrootcert=system` as the URL's own TLS mode (better: only ever turn PGSSL=disable/false into
// `ssl: false` when postgres.js would otherwise read PGSSL: no ssl option, and no `ssl`, `sslmode`
// or `sslrootcert=system` in the URL's query).
//
// 2. Replicas. What the user does: runs with PGSSL=disable (or false) in the environment, against servers without
// TLS, and registers the core with a primary and a read replica given as URLs without sslmode.
// What they should get (core README, "connection": "`ssl: 'disable'` is no TLS ..., and so is
// `PGSSL=disable` or `PGSSL=false` in the environment when the connection names no TLS mode"):
// no TLS on any connection the pool opens, the replica's included; the app registers.
// What they get: the primary's connections go without TLS, but the replica's try TLS (register fails
// with FST_PG_POOL_CONNECT_FAILED, caused by "Client network socket disconnected before secure TLS
// connection was established", or "The server does not support SSL connections").
// Cause: options.ts resolveReplicas calls resolveConnection(entry.connection, {}) with an empty
// environment, so the PGSSL rule (ownSsl) never runs for a replica, while postgres.js still reads
// process.env.PGSSL for the replica's clients and takes 'disable' as a TLS mode.

let db: TestDatabase
let app: FastifyInstance | undefined
const saved = process.env.PGSSL
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  if (saved === undefined) delete process.env.PGSSL
  else process.env.PGSSL = saved
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

/** The first packet the pool sends to a server (a fake that reads it and hangs up). */
async function firstPacket(pgssl: string | undefined, query: string): Promise<string> {
  if (pgssl === undefined) delete process.env.PGSSL
  else process.env.PGSSL = pgssl
  const packets: Buffer[] = []
  const server = createServer((socket) => {
    socket.once('data', (chunk: Buffer) => {
      packets.push(chunk)
      socket.destroy()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  const a = Fastify()
  try {
    try {
      await a.register(pgPoolCore, {
        connection: `postgres://app:pw@127.0.0.1:${port}/appdb${query}`,
        pool: { max: 1, connectTimeout: 1_000, applicationName: uniqueName() },
      })
      await a.ready()
    } catch {
      // The fake server hangs up: register fails either way; what was sent first is the point.
    }
    const first = packets[0]
    if (first === undefined || first.length < 8) return 'nothing'
    const code = first.readInt32BE(4)
    return code === 80877103 ? 'SSLRequest' : code === 196608 ? 'StartupMessage (plaintext)' : `code ${code}`
  } finally {
    await a.close().catch(() => {})
    await new Promise((resolve) => server.close(resolve))
  }
}

describe('PGSSL=disable/false and a URL that asks for verified TLS with sslrootcert=system', () => {
  test('control: without PGSSL, the pool starts with an SSLRequest', async () => {
    expect(await firstPacket(undefined, '?sslrootcert=system')).toBe('SSLRequest')
  })

  for (const value of ['disable', 'false']) {
    test(`PGSSL=${value}: still an SSLRequest first, never a plaintext startup`, async () => {
      // Observed: 'StartupMessage (plaintext)'.
      expect(await firstPacket(value, '?sslrootcert=system')).toBe('SSLRequest')
    })
  }
})

describe('PGSSL=disable/false with a read replica', () => {
  test('control: PGSSL=disable, the primary alone registers (no TLS)', async () => {
    process.env.PGSSL = 'disable'
    const a = Fastify()
    app = a
    await a.register(pgPoolCore, {
      connection: db.url,
      pool: { max: 1, connectTimeout: 3_000, applicationName: uniqueName() },
    })
    await a.ready()
    expect(await a.pgPool.ping(3_000)).toBeGreaterThanOrEqual(0)
  })

  for (const value of ['disable', 'false']) {
    test(`PGSSL=${value}: the replica's connections open without TLS, as the primary's`, async () => {
      process.env.PGSSL = value
      const a = Fastify()
      app = a
      // The replica is the same server (its lag sampler finds no standby: it gets no reads, but its
      // pool opens connections all the same).
      const error = await a
        .register(pgPoolCore, {
          connection: db.url,
          replicas: [db.url],
          pool: { max: 1, connectTimeout: 3_000, applicationName: uniqueName() },
        })
        .then(() => a.ready())
        .then(
          () => undefined,
          (e: Error & { code?: string; cause?: Error }) => `${e.code}: ${e.cause?.message}`,
        )
      expect(error).toBeUndefined()
      const replica = a.pgPools.all().find((view) => view.role === 'replica')
      expect(replica).toBeDefined()
      const ping = await replica?.ping(3_000).then(
        () => 'ok',
        (e: Error & { code?: string; cause?: Error }) => `${e.code}: ${e.cause?.message}`,
      )
      expect(ping).toBe('ok')
    })
  }
})

// Docs that lied (the code was kept; the doc was corrected, and this pins what it now says).
// What the user read (core README, TLS): "`?sslmode=`: `require` (also `prefer`, `allow`)
// encrypts without verifying the server". So they chose `sslmode=prefer`.
// What they got: against a server without TLS, or anything on the path that answers the
// SSLRequest with 'N' for it (a one-byte downgrade), `prefer` connects in plain text: postgres.js
// falls back, as libpq does. The startup packet, the password exchange and every row travel
// unencrypted, with no error or log line. `require` and `allow` refuse such a server (postgres.js's
// `allow` tries TLS only, unlike libpq's, which tries plain text first).
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { registerError } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../../support/database.js'

let db: TestDatabase
let proxy: Server
let proxyPort = 0
const sockets = new Set<Socket>()
/** Connections whose StartupMessage the proxy read in plain text. */
let plaintextStartups = 0

beforeAll(async () => {
  db = await createTestDatabase()
  const upstream = new URL(db.directUrl)
  // Answers every SSLRequest with 'N' (no TLS here), then forwards the rest to the real server.
  proxy = createServer((client) => {
    sockets.add(client)
    client.once('data', (first: Buffer) => {
      const sslRequest = first.length >= 8 && first.readInt32BE(4) === 80877103
      const server = tcpConnect(Number(upstream.port), upstream.hostname)
      sockets.add(server)
      const forward = (chunk: Buffer) => {
        if (chunk.length >= 8 && chunk.readInt32BE(4) === 196608) plaintextStartups++
        server.write(chunk)
      }
      client.on('data', forward)
      server.on('data', (chunk) => client.write(chunk))
      server.on('error', () => client.destroy())
      client.on('error', () => server.destroy())
      server.on('close', () => client.destroy())
      client.on('close', () => server.destroy())
      if (sslRequest) client.write('N')
      else forward(first)
    })
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  proxyPort = (proxy.address() as { port: number }).port
})
afterAll(async () => {
  for (const socket of sockets) socket.destroy()
  await new Promise((resolve) => proxy.close(resolve))
  await db.drop()
})

function viaProxy(mode: string): string {
  const url = new URL(db.url)
  url.hostname = '127.0.0.1'
  url.port = String(proxyPort)
  url.searchParams.set('sslmode', mode)
  return url.toString()
}

describe('sslmode=prefer where TLS is not offered (README, TLS)', () => {
  test('prefer: the pool connects in plain text, without an error', async () => {
    const before = plaintextStartups
    const app = Fastify()
    try {
      await app.register(pgPoolCore, {
        connection: viaProxy('prefer'),
        pool: { max: 1, applicationName: uniqueName() },
      })
      await app.ready()
      const [row] = await app.db<{ ssl: boolean }[]>`select ssl from pg_stat_ssl where pid = pg_backend_pid()`
      expect(row?.ssl).toBe(false)
      expect(plaintextStartups).toBeGreaterThan(before)
    } finally {
      await app.close()
    }
  })

  for (const mode of ['require', 'allow', 'verify-full']) {
    test(`${mode}: register fails, nothing sent in plain text`, async () => {
      const before = plaintextStartups
      const error = await registerError((app) =>
        app.register(pgPoolCore, { connection: viaProxy(mode), pool: { max: 1, applicationName: uniqueName() } }),
      )
      expect(error.code).toBe('FST_PG_POOL_CONNECT_FAILED')
      expect(plaintextStartups).toBe(before)
    })
  }
})

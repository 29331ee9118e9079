// What the user does: deploys with the libpq environment variable PGSSLMODE=require (or
// verify-full), as Heroku, AWS and most PostgreSQL guides say, and as pg (@fastify/postgres, which
// the migration guide moves people from) reads it; the connection (DATABASE_URL, or options)
// names no TLS mode of its own.
// What they should get: TLS, as every libpq client and pg give them, or a refusal at register.
// The core README says the pool falls back on "the PG* variables"; PGSSLMODE is the one that
// asks for encryption.
// What they got: the pool's first packet is a plaintext StartupMessage (postgres.js reads PGSSL
// only): the password handshake and every row go unencrypted, and PGSSLMODE=verify-full against
// a server whose certificate cannot be verified connects in plain text instead of failing.
// Fail open, silently. The fix reads PGSSLMODE as libpq does when neither the connection nor
// PGSSL names a TLS mode (for the replicas too), and refuses a value libpq does not know.
import { createServer } from 'node:net'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { registerError } from '../../../support/app.js'
import { uniqueName } from '../../../support/database.js'
import { startTlsServer, type TlsServer } from '../../../support/tls-server.js'

const saved = { PGSSLMODE: process.env.PGSSLMODE, PGSSL: process.env.PGSSL }
let tls: TlsServer
const password = `pw-${uniqueName('iam')}`
beforeAll(async () => {
  // Plaintext allowed too: only the client's choice decides whether TLS is used.
  tls = await startTlsServer({ allowPlaintext: true })
  const admin = postgres(tls.url, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create role iam login password '${password}'`)
  await admin.end()
}, 120_000)
afterEach(() => {
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name]
    else process.env[name] = value
  }
})
afterAll(() => tls?.destroy())

function setEnv(pgsslmode: string | undefined, pgssl?: string): void {
  if (pgsslmode === undefined) delete process.env.PGSSLMODE
  else process.env.PGSSLMODE = pgsslmode
  if (pgssl === undefined) delete process.env.PGSSL
  else process.env.PGSSL = pgssl
}

/** The first packet the pool sends to a server (a fake that reads it and hangs up). */
async function firstPacket(connection: (port: number) => unknown, replica = false): Promise<string> {
  const packets: Buffer[] = []
  const server = createServer((socket) => {
    socket.once('data', (chunk: Buffer) => {
      packets.push(chunk)
      socket.destroy()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  const app = Fastify()
  try {
    try {
      await app.register(pgPoolCore, {
        // The primary is the real server over TLS when the replica is what is probed.
        connection: (replica ? `${tls.url}?sslmode=require` : connection(port)) as never,
        ...(replica ? { replicas: [connection(port) as never] } : {}),
        pool: { max: 1, connectTimeout: 1_000, applicationName: uniqueName() },
      })
      await app.ready()
    } catch {
      // The fake server hangs up: register fails (or the replica's pool does); the first packet is the point.
    }
    const first = packets[0]
    if (first === undefined || first.length < 8) return 'nothing'
    const code = first.readInt32BE(4)
    return code === 80877103 ? 'SSLRequest' : code === 196608 ? 'StartupMessage (plaintext)' : `code ${code}`
  } finally {
    await app.close().catch(() => {})
    await new Promise((resolve) => server.close(resolve))
  }
}

const asUrl = (port: number) => `postgres://iam:${password}@127.0.0.1:${port}/postgres`
const asOptions = (port: number) => ({ host: '127.0.0.1', port, database: 'postgres', username: 'iam', password })

describe('PGSSLMODE in the environment, the connection naming no TLS mode', () => {
  test('control: without it, the pool starts in plain text', async () => {
    setEnv(undefined)
    expect(await firstPacket(asUrl)).toBe('StartupMessage (plaintext)')
  })

  for (const mode of ['require', 'verify-full', 'verify-ca', 'prefer']) {
    test(`PGSSLMODE=${mode}: the pool (URL and options) and a replica start with an SSLRequest`, async () => {
      setEnv(mode)
      // Observed before the fix: 'StartupMessage (plaintext)'.
      expect(await firstPacket(asUrl)).toBe('SSLRequest')
      expect(await firstPacket(asOptions)).toBe('SSLRequest')
      expect(await firstPacket(asUrl, true)).toBe('SSLRequest')
    })
  }

  test('PGSSLMODE=require: every connection of the pool, the ping and LISTEN are encrypted', async () => {
    setEnv('require')
    const app = Fastify()
    try {
      await app.register(pgPoolCore, {
        connection: asOptions(tls.port),
        pool: { max: 2, applicationName: uniqueName() },
      })
      await app.ready()
      const listening = await app.db.listen('ch', () => {})
      const rows = await app.db<{ ssl: boolean; application_name: string }[]>`
        select s.ssl, a.application_name from pg_stat_ssl s join pg_stat_activity a using (pid)
        where a.usename = 'iam'`
      expect(rows.length).toBeGreaterThanOrEqual(2)
      expect(rows.filter((row) => !row.ssl)).toEqual([])
      expect(await app.pgPool.ping(5_000)).toBeGreaterThanOrEqual(0)
      await listening.unlisten()
    } finally {
      await app.close()
    }
  })

  test('PGSSLMODE=verify-full against a certificate no trusted CA signed: register fails, no plaintext fallback', async () => {
    setEnv('verify-full')
    const error = await registerError((app) =>
      app.register(pgPoolCore, { connection: asUrl(tls.port), pool: { max: 1, applicationName: uniqueName() } }),
    )
    expect(error.code).toBe('FST_PG_POOL_CONNECT_FAILED')
  })

  test('the connection names its own mode, or PGSSL does: they win over PGSSLMODE', async () => {
    setEnv('verify-full')
    expect(await firstPacket((port) => `${asUrl(port)}?sslmode=disable`)).toBe('StartupMessage (plaintext)')
    expect(await firstPacket((port) => ({ ...asOptions(port), ssl: false }))).toBe('StartupMessage (plaintext)')
    setEnv('verify-full', 'disable')
    expect(await firstPacket(asUrl)).toBe('StartupMessage (plaintext)')
    setEnv('disable')
    expect(await firstPacket(asUrl)).toBe('StartupMessage (plaintext)')
  })

  test("a value libpq does not know (pg's no-verify, a typo) is refused at register, not read as plain text", async () => {
    for (const value of ['no-verify', 'requir']) {
      setEnv(value)
      const error = await registerError((app) =>
        app.register(pgPoolCore, { connection: asUrl(tls.port), pool: { max: 1, applicationName: uniqueName() } }),
      )
      expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(error.message).toContain('PGSSLMODE')
    }
  })
})

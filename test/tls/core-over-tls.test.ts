import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { uniqueName, waitFor } from '../support/database.js'
import { startTlsServer, type TlsServer } from '../support/tls-server.js'
import { Witness } from '../support/witness.js'

// Issue 19: TLS documented and tested. The server (test/support/tls-server.ts) accepts TLS only
// (pg_hba has hostssl lines alone), so every connection that works here is encrypted.

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
/** Node's codes for a chain that does not lead to a trusted CA. */
const UNTRUSTED = /UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN/

let tls: TlsServer
/** A plain client over TLS, for pg_stat_ssl. */
let admin: postgres.Sql
/** Everything the apps printed or answered. */
const witness = new Witness()
const { seen } = witness
failOnProcessErrors()

function withParams(url: string, params: Record<string, string>): string {
  const parsed = new URL(url)
  for (const [key, value] of Object.entries(params)) parsed.searchParams.set(key, value)
  return parsed.toString()
}

/** The TLS server as postgres.js options, with `ssl` as given. */
function options(ssl: NonNullable<postgres.Options<{}>['ssl']>): postgres.Options<{}> {
  const parsed = new URL(tls.url)
  return {
    host: parsed.hostname,
    port: Number(parsed.port),
    database: parsed.pathname.slice(1),
    username: decodeURIComponent(parsed.username),
    password: decodeURIComponent(parsed.password),
    ssl,
  }
}

/** pg_stat_ssl of the backends with this application_name. */
async function sslOfBackends(applicationName: string): Promise<{ ssl: boolean; version: string | null }[]> {
  return admin<{ ssl: boolean; version: string | null }[]>`
    select s.ssl, s.version from pg_stat_ssl s join pg_stat_activity a using (pid)
    where a.application_name = ${applicationName} order by pid`
}

beforeAll(async () => {
  tls = await startTlsServer()
  admin = postgres(tls.url, { max: 1, ssl: { ca: tls.caPem }, onnotice: () => {} })
})
afterEach(async () => {
  await witness.closeApps()
})
afterAll(async () => {
  const all = seen.join('\n')
  expect(all).not.toContain(tls.password)
  expect(all).not.toContain(encodeURIComponent(tls.password))
  await admin?.end({ timeout: 1 })
  await tls?.destroy()
})

describe('the core over TLS', () => {
  test('ssl: { ca } verifies the server and every connection of the pool is encrypted', async () => {
    const applicationName = uniqueName('tls')
    const { app } = witness.loggedApp()
    await app.register(pgPoolCore, { connection: options({ ca: tls.caPem }), pool: { max: 2, applicationName } })
    app.get('/ssl', async (request) => {
      const [row] = await request.db<{ ssl: boolean }[]>`
        select ssl, pg_sleep(0.05) from pg_stat_ssl where pid = pg_backend_pid()`
      return { ssl: row?.ssl }
    })
    const responses = await Promise.all([witness.capture(app, '/ssl'), witness.capture(app, '/ssl')])
    expect(responses.map((response) => response.json())).toEqual([{ ssl: true }, { ssl: true }])
    const backends = await sslOfBackends(applicationName)
    expect(backends).toHaveLength(2)
    for (const backend of backends)
      expect(backend).toEqual({ ssl: true, version: expect.stringMatching(/^TLSv1\.[23]$/) })
    // Host name checked too: the certificate names localhost.
    const { app: byName } = witness.loggedApp()
    await byName.register(pgPoolCore, { connection: { ...options({ ca: tls.caPem }), host: 'localhost' } })
    expect(await byName.db`select 1 as one`).toEqual([{ one: 1 }])
  })

  test('a CA that did not sign the server certificate fails register with FST_PG_POOL_CONNECT_FAILED; bodies name no address and no secret', async () => {
    const { app: eager } = witness.loggedApp()
    const failure = await eager
      .register(pgPoolCore, { connection: options({ ca: tls.wrongCaPem }), pool: { connectTimeout: 5_000 } })
      .then(() => eager.ready())
      .then(
        () => undefined,
        (error: Error & { code?: string }) => error,
      )
    expect(failure?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect(failure?.message).toBe('Could not connect to the database')
    // The reason is the cause, for the log.
    expect((failure?.cause as Error | undefined)?.message).toMatch(UNTRUSTED)
    seen.push(String(failure), JSON.stringify(failure ?? {}), String((failure?.cause as Error | undefined)?.message))

    const { app: lazy, lines } = witness.loggedApp()
    await lazy.register(pgPoolCore, {
      connection: options({ ca: tls.wrongCaPem }),
      pool: { lazy: true, connectTimeout: 5_000, acquireTimeout: 5_000 },
    })
    await lazy.register(pgPoolHealth, { pingTimeout: 5_000, cacheTime: 0, details: 'full' })
    lazy.get('/q', async (request) => request.db`select 1`)
    const refused = await witness.capture(lazy, '/q')
    expect(refused.statusCode).toBe(503)
    expect(refused.json()).toEqual({
      statusCode: 503,
      code: 'FST_PG_POOL_CONNECT_FAILED',
      error: 'Service Unavailable',
      message: 'Could not connect to the database',
    })
    const health = await witness.capture(lazy, '/health/ready')
    expect(health.statusCode).toBe(503)
    for (const body of [refused.body, health.body]) {
      expect(body).not.toContain(String(tls.port))
      expect(body).not.toContain('127.0.0.1')
      expect(body).not.toContain(tls.password)
    }
    expect(lines.join('\n')).toMatch(UNTRUSTED)
  })

  test('sslmode in a URL: require encrypts without verifying; verify-full checks the trust store only', async () => {
    const applicationName = uniqueName('tls-url')
    const { app } = witness.loggedApp()
    await app.register(pgPoolCore, {
      connection: withParams(tls.url, { sslmode: 'require' }),
      pool: { max: 1, applicationName },
    })
    expect(await app.db`select ssl from pg_stat_ssl where pid = pg_backend_pid()`).toEqual([{ ssl: true }])
    expect(await sslOfBackends(applicationName)).toEqual([{ ssl: true, version: expect.any(String) }])
    expect(app.pgPool.target).toBe(`127.0.0.1:${tls.port}/postgres`)

    // postgres.js verifies verify-full (and verify-ca) against Node's trust store, never a file
    // named in the URL: this server's private CA is unknown there.
    const { app: verifying } = witness.loggedApp()
    const failure = await verifying
      .register(pgPoolCore, { connection: withParams(tls.url, { sslmode: 'verify-full' }) })
      .then(() => verifying.ready())
      .then(
        () => undefined,
        (error: Error & { code?: string }) => error,
      )
    expect(failure?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect((failure?.cause as Error | undefined)?.message).toMatch(UNTRUSTED)
    seen.push(String((failure?.cause as Error | undefined)?.message))
  })

  test('DATABASE_URL with sslmode=verify-full and the CA in NODE_EXTRA_CA_CERTS: verified and encrypted', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fpp-tls-core-'))
    try {
      await writeFile(join(dir, 'ca.pem'), tls.caPem)
      const script = `
        import Fastify from 'fastify'
        import pgPoolCore from '@fastify-pg-pool/core'
        const app = Fastify()
        await app.register(pgPoolCore, { pool: { max: 1 } }) // no connection: DATABASE_URL
        const [row] = await app.db\`select ssl from pg_stat_ssl where pid = pg_backend_pid()\`
        await app.close()
        console.log(JSON.stringify(row))`
      const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
        cwd: root,
        env: {
          ...process.env,
          DATABASE_URL: withParams(tls.url, { sslmode: 'verify-full' }),
          NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem'),
        },
        timeout: 30_000,
      })
      expect(JSON.parse(stdout)).toEqual({ ssl: true })
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  test('health, pings and metrics work over TLS, and come back after the server restarts', async () => {
    const applicationName = uniqueName('tls-health')
    const { app } = witness.loggedApp()
    await app.register(pgPoolCore, {
      connection: options({ ca: tls.caPem }),
      pool: { max: 2, applicationName, connectTimeout: 1_000, acquireTimeout: 1_000 },
    })
    await app.register(pgPoolHealth, { pingTimeout: 2_000, cacheTime: 0, details: 'full' })
    await app.register(pgPoolMetrics)
    app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
    await app.ready()

    expect(typeof (await app.pgPool.ping(2_000))).toBe('number')
    const ready = await witness.capture(app, '/health/ready')
    expect(ready.statusCode).toBe(200)
    expect(ready.json()).toMatchObject({ status: 'pass' })
    expect((await witness.capture(app, '/health')).statusCode).toBe(200)
    expect((await witness.capture(app, '/q')).json()).toEqual({ one: 1 })
    const metrics = await witness.capture(app, '/metrics')
    expect(metrics.statusCode).toBe(200)
    expect(metrics.body).toMatch(/fastify_pg_pool|pg_pool/)
    expect(await sslOfBackends(applicationName)).toEqual([{ ssl: true, version: expect.any(String) }])

    await tls.stop()
    expect((await witness.capture(app, '/health/ready')).statusCode).toBe(503)
    expect((await witness.capture(app, '/q')).statusCode).toBe(503)
    await tls.start()
    // The admin client reconnects by itself; the pool and the pings reopen over TLS.
    expect(await waitFor(async () => (await app.inject('/health/ready')).statusCode === 200, 10_000)).toBe(true)
    expect(await waitFor(async () => (await app.inject('/q')).statusCode === 200, 10_000)).toBe(true)
    expect(await sslOfBackends(applicationName)).toEqual([{ ssl: true, version: expect.any(String) }])
  })
})

import { randomBytes } from 'node:crypto'
import pgPoolCore, { type PgPoolCoreOptions } from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, inject, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { Witness } from '../support/witness.js'

// A login role of this file's own, with a password that needs URL encoding, so that the test
// does not depend on the server's own credentials (DATABASE_URL may use trust auth).
const marker = randomBytes(8).toString('hex')
const password = `p@ss/w%rd:${marker}`
const wrongPassword = `wr0ng@${randomBytes(8).toString('hex')}`
const role = uniqueName('fpp_secret').replace('-', '_')
/** A parameter value that must not reach logs (the server's messages never echo it below). */
const secretParam = `param-${randomBytes(8).toString('hex')}`

let db: TestDatabase
let proxy: TcpProxy
let url: string
/** Everything the apps printed or answered. */
const witness = new Witness()
const { seen } = witness
failOnProcessErrors()

function withCredentials(base: string, user: string, pass: string): string {
  const parsed = new URL(base)
  parsed.username = user
  parsed.password = encodeURIComponent(pass)
  return parsed.toString()
}

/** Every form the secret could take in text. */
function forms(secret: string): string[] {
  return [secret, encodeURIComponent(secret), secret.split(':').pop() as string]
}

function expectNoSecret(texts: string[]): void {
  const all = texts.join('\n')
  for (const secret of [...forms(password), ...forms(wrongPassword)]) expect(all).not.toContain(secret)
  expect(all).not.toContain(marker)
}

beforeAll(async () => {
  db = await createTestDatabase()
  await db.admin.unsafe(`create role ${role} login password '${password.replace(/'/g, "''")}'`)
  await db.sql.unsafe(`grant all on schema public to ${role}`)
  url = withCredentials(db.directUrl, role, password)
  proxy = await startTcpProxy(Number(new URL(db.directUrl).port))
})
afterEach(async () => {
  await witness.closeApps()
  proxy.onClientData = undefined
  proxy.setMode('pass')
})
afterAll(async () => {
  expectNoSecret(seen)
  await proxy.close()
  // Dropped by drop() before it ends the admin client: a drop after it failed silently, and the role stayed.
  await db.drop([role])
})

describe('the password never appears', () => {
  test('in logs, error bodies, health and metrics through query errors, timeouts, refusals and outages', async () => {
    const { app, lines } = witness.loggedApp()
    await app.register(pgPoolCore, {
      connection: proxy.urlFor(url),
      pool: { max: 2, maxWaiting: 1, connectTimeout: 500, acquireTimeout: 500, statementTimeout: 1_000 },
    })
    await app.register(pgPoolHealth, { pingTimeout: 300, cacheTime: 0, details: 'full' })
    await app.register(pgPoolMetrics)
    app.get('/ok', async (request) => (await request.db`select 1 as one`)[0])
    app.get('/missing-table', async (request) => request.db`select * from no_such_table where x = ${secretParam}`)
    app.get('/division', async (request) => request.db`select ${secretParam}::text as p, 1 / 0 as boom`)
    app.get('/slow', async (request) => request.db`select pg_sleep(2), ${secretParam}::text as p`)
    app.get('/hold', async (request) => request.db`select pg_sleep(0.8)`)
    await app.ready()

    expect((await witness.capture(app, '/ok')).statusCode).toBe(200)
    expect((await witness.capture(app, '/missing-table')).json()).toMatchObject({ statusCode: 500, code: '42P01' })
    // A data exception (class 22) is the request's: 400, with the SQLSTATE as its code.
    expect((await witness.capture(app, '/division')).json()).toMatchObject({ statusCode: 400, code: '22012' })
    expect((await witness.capture(app, '/slow')).json()).toMatchObject({
      statusCode: 503,
      code: 'FST_PG_POOL_QUERY_TIMEOUT',
    })

    // Refusals: two hold the pool, one waits past acquireTimeout, one finds the queue full.
    const holds = [witness.capture(app, '/hold'), witness.capture(app, '/hold')]
    await waitFor(() => app.pgPool.stats().leased === 2)
    const waiting = witness.capture(app, '/ok')
    await waitFor(() => app.pgPool.stats().waiting === 1)
    expect((await witness.capture(app, '/ok')).json()).toMatchObject({ code: 'FST_PG_POOL_QUEUE_FULL' })
    expect((await waiting).json()).toMatchObject({ code: 'FST_PG_POOL_ACQUIRE_TIMEOUT' })
    await Promise.all(holds)

    // A frozen server: the client-side deadline, a failing readiness probe.
    proxy.setMode('blackhole')
    expect((await witness.capture(app, '/ok')).json()).toMatchObject({ code: 'FST_PG_POOL_QUERY_TIMEOUT' })
    expect((await witness.capture(app, '/health/ready')).statusCode).toBe(503)
    // Connections reset: connect errors, a failing ping.
    proxy.setMode('reset')
    expect((await witness.capture(app, '/ok')).statusCode).toBe(503)
    expect((await witness.capture(app, '/health')).statusCode).toBe(503)
    const pingError = await app.pgPool.ping(300).catch((error: Error) => error)
    expect(pingError).toBeInstanceOf(Error)
    seen.push(String(pingError), (pingError as Error).stack ?? '', JSON.stringify(pingError))

    proxy.setMode('pass')
    expect(await waitFor(async () => (await app.inject('/ok')).statusCode === 200, 3_000)).toBe(true)
    for (const path of ['/health', '/health/ready', '/health/live', '/metrics']) {
      expect((await witness.capture(app, path)).statusCode).toBe(200)
    }
    seen.push(JSON.stringify(app.pgPool.options), app.pgPool.target, JSON.stringify(app.pgPool.stats()))
    expect(app.pgPool.target).toBe(`127.0.0.1:${proxy.port}/${new URL(db.directUrl).pathname.slice(1)}`)

    // The run produced what this test means to search: error logs with postgres errors in them.
    const logged = lines.join('\n')
    expect(logged).toMatch(/no_such_table/)
    expect(logged).toMatch(/FST_PG_POOL_QUERY_TIMEOUT/)
    expect(logged).toMatch(/postgres notice|"level":50/)
    // Query parameters are not logged by default.
    expect(logged).not.toContain(secretParam)
    expectNoSecret(lines)
  })

  test('in the error of a register that cannot log in, and in lazy refusals', async () => {
    const wrongUrl = withCredentials(db.directUrl, role, wrongPassword)
    const probe = postgres(wrongUrl, { max: 1, onnotice: () => {}, connect_timeout: 2 })
    const enforced = await probe`select 1`.then(
      () => false,
      () => true,
    )
    await probe.end({ timeout: 0 })

    const { app: eager } = witness.loggedApp()
    const failure = await eager
      .register(pgPoolCore, { connection: wrongUrl, pool: { connectTimeout: 1_000 } })
      .then(() => eager.ready())
      .then(
        () => undefined,
        (error: Error & { code?: string }) => error,
      )
    if (enforced) {
      expect(failure?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
      expect((failure?.cause as Error | undefined)?.message).toMatch(/28P01/)
      // The server's message names the user: connection details do reach the cause (the log).
      expect((failure?.cause as Error | undefined)?.message).toContain(role)
    }
    expect(enforced || inject('serverKind') === 'external').toBe(true)
    seen.push(String(failure), failure?.stack ?? '', JSON.stringify(failure ?? {}))

    const { app: lazy } = witness.loggedApp()
    await lazy.register(pgPoolCore, { connection: wrongUrl, pool: { lazy: true, connectTimeout: 1_000 } })
    lazy.get('/ok', async (request) => (await request.db`select 1 as one`)[0])
    await lazy.ready()
    const refused = await witness.capture(lazy, '/ok')
    expect(refused.statusCode).toBe(enforced ? 503 : 200)
    expectNoSecret(seen)
  })

  test('with postgres.js options instead of a URL, through connect errors', async () => {
    const { app } = witness.loggedApp()
    const parsed = new URL(db.directUrl)
    const connection: PgPoolCoreOptions['connection'] = {
      host: '127.0.0.1',
      port: proxy.port,
      database: parsed.pathname.slice(1),
      username: role,
      password,
    }
    proxy.setMode('reset')
    await app.register(pgPoolCore, { connection, pool: { lazy: true, connectTimeout: 500, acquireTimeout: 500 } })
    app.get('/ok', async (request) => (await request.db`select 1 as one`)[0])
    await app.ready()
    const refused = await witness.capture(app, '/ok')
    expect(refused.json()).toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED' })
    const events: string[] = []
    app.pgPool.on('connectError', (error) => events.push(String(error), error.stack ?? ''))
    await witness.capture(app, '/ok')
    seen.push(...events)
    expect(events.length).toBeGreaterThan(0)
    proxy.setMode('pass')
    expect(await waitFor(async () => (await app.inject('/ok')).statusCode === 200, 3_000)).toBe(true)
    expectNoSecret(seen)
  })
})

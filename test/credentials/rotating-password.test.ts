import { randomBytes } from 'node:crypto'
import pgPoolCore, { type PgPoolCoreOptions } from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify from 'fastify'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, inject, test } from 'vitest'
import { deferred, failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { Witness } from '../support/witness.js'

// Issue 19: `connection.password` as a function, called for each new connection (cloud IAM
// tokens expire in minutes). The role's password changes while the app runs; new connections
// must use the new one, old ones retire, requests keep succeeding, and no password is printed.

const role = uniqueName('fpp_rotate').replace('-', '_')
/** Passwords that need URL encoding, each with a marker of its own for the final search. */
const newPassword = () => `tok@${randomBytes(6).toString('hex')}/${randomBytes(6).toString('hex')}:x`

let db: TestDatabase
/** Whether the server enforces password auth (an external server may use trust). */
let enforced = false
/** Every password the role ever had or a function returned. */
const issued: string[] = []
/** Everything the apps printed or answered. */
const witness = new Witness()
const { seen } = witness
failOnProcessErrors()

function forms(secret: string): string[] {
  return [secret, encodeURIComponent(secret), ...secret.split(/[@/:]/).filter((part) => part.length >= 8)]
}

function expectNoSecret(texts: readonly string[]): void {
  const all = texts.join('\n')
  for (const secret of issued) for (const form of forms(secret)) expect(all).not.toContain(form)
}

async function setRolePassword(password: string): Promise<void> {
  issued.push(password)
  await db.admin.unsafe(`alter role ${role} password '${password.replace(/'/g, "''")}'`)
}

/** A role's login through a plain client: true when the server accepts `password`. */
async function canLogin(password: string): Promise<boolean> {
  const parsed = new URL(db.directUrl)
  const sql = postgres({
    host: parsed.hostname,
    port: Number(parsed.port),
    database: parsed.pathname.slice(1),
    username: role,
    password,
    max: 1,
    connect_timeout: 5,
    onnotice: () => {},
  })
  try {
    await sql`select 1`
    return true
  } catch {
    return false
  } finally {
    await sql.end({ timeout: 0 })
  }
}

function connectionFor(password: NonNullable<postgres.Options<{}>['password']>): PgPoolCoreOptions['connection'] {
  const parsed = new URL(db.directUrl)
  return {
    host: parsed.hostname,
    port: Number(parsed.port),
    database: parsed.pathname.slice(1),
    username: role,
    password,
  }
}

async function backendPids(applicationName: string): Promise<number[]> {
  const rows = await db.admin<{ pid: number }[]>`
    select pid from pg_stat_activity where application_name = ${applicationName} order by pid`
  return rows.map((row) => row.pid)
}

function causeOf(error: unknown): string {
  return String((error as { cause?: { message?: string } } | undefined)?.cause?.message)
}

beforeAll(async () => {
  db = await createTestDatabase()
  const first = newPassword()
  issued.push(first)
  await db.admin.unsafe(`create role ${role} login password '${first.replace(/'/g, "''")}'`)
  enforced = !(await canLogin(`wrong-${randomBytes(4).toString('hex')}`))
  expect(enforced || inject('serverKind') === 'external').toBe(true)
  expect(await canLogin(first)).toBe(true)
})
afterEach(async () => {
  await witness.closeApps()
})
afterAll(async () => {
  expectNoSecret(seen)
  // Dropped by drop() before it ends the admin client: a drop after it failed silently, and the role stayed.
  await db.drop([role])
})

describe('connection.password as a function', () => {
  test('called once per new connection; after ALTER ROLE new connections use the new password and old ones are retired', async () => {
    let token = issued[0] as string
    let calls = 0
    const applicationName = uniqueName('rotate')
    const { app, lines } = witness.loggedApp()
    await app.register(pgPoolCore, {
      connection: connectionFor(() => {
        calls++
        return token
      }),
      pool: { max: 2, applicationName, connectTimeout: 2_000 },
    })
    await app.register(pgPoolHealth, { pingTimeout: 2_000, cacheTime: 0, details: 'full' })
    await app.register(pgPoolMetrics)
    let connects = 0
    app.pgPool.on('connect', () => connects++)
    app.get('/who', async (request) => {
      const [row] = await request.db<{ user: string; pid: number }[]>`
        select current_user as user, pg_backend_pid() as pid, pg_sleep(0.05)`
      return row
    })
    await app.ready()
    // register opened one connection to prove the database is reachable: one call.
    expect(calls).toBe(1)

    // Two requests at once need a second connection: one more call, none per request.
    const [a, b] = await Promise.all([witness.capture(app, '/who'), witness.capture(app, '/who')])
    expect([a?.statusCode, b?.statusCode]).toEqual([200, 200])
    expect(a?.json().user).toBe(role)
    expect(connects).toBe(1)
    expect(calls).toBe(2)
    for (let i = 0; i < 5; i++) expect((await witness.capture(app, '/who')).statusCode).toBe(200)
    expect(calls).toBe(2)
    const oldPids = await backendPids(applicationName)
    expect(oldPids).toHaveLength(2)

    // The password rotates on the server; the function still returns the old one.
    const rotated = newPassword()
    await setRolePassword(rotated)
    // Open connections stay authenticated: requests keep succeeding on them.
    for (let i = 0; i < 3; i++) expect((await witness.capture(app, '/who')).statusCode).toBe(200)
    expect(await backendPids(applicationName)).toEqual(oldPids)
    // A new connection calls the function again, and the old password is refused.
    const stale = await app.pgPool.ping(2_000).catch((error: unknown) => error)
    expect(calls).toBe(3)
    seen.push(String(stale), JSON.stringify(stale ?? {}), causeOf(stale))
    if (enforced) {
      expect(stale).toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED' })
      expect(causeOf(stale)).toMatch(/28P01/)
      expect((await witness.capture(app, '/health/ready')).statusCode).toBe(503)
    }

    // The variable the function reads is updated: new connections authenticate again.
    token = rotated
    expect(typeof (await app.pgPool.ping(2_000))).toBe('number')
    expect((await witness.capture(app, '/health/ready')).statusCode).toBe(200)

    // Old connections retired: their backends are terminated; the pool notices and replaces them.
    expect(await db.terminate(applicationName)).toBe(2)
    await waitUntil(() => app.pgPool.stats().open === 0, 'the pool to drop the terminated connections', 5_000)
    const callsBefore = calls
    const after = await Promise.all([witness.capture(app, '/who'), witness.capture(app, '/who')])
    expect(after.map((response) => response.statusCode)).toEqual([200, 200])
    const newPids = await backendPids(applicationName)
    expect(newPids).toHaveLength(2)
    expect(newPids.filter((pid) => oldPids.includes(pid))).toEqual([])
    // Served by the new connections only (which served which is the machine's timing: a request
    // done before the second connection opened hands its own to the other).
    for (const response of after) expect(newPids).toContain(response.json().pid)
    expect(calls - callsBefore).toBe(2)
    if (enforced) expect(await canLogin(issued[0] as string)).toBe(false)

    for (const path of ['/health', '/health/ready', '/metrics'])
      expect((await witness.capture(app, path)).statusCode).toBe(200)
    seen.push(app.pgPool.redact(`${token} ${encodeURIComponent(token)}`))
    expect(app.pgPool.redact(`a ${rotated} b ${encodeURIComponent(rotated)} c`)).toBe('a *** b *** c')
    expect(app.pgPool.redact(`a ${issued[0]} b`)).toBe('a *** b')
    // Trace-level logging saw the connects and the failed ping: no password in any line.
    expect(lines.join('\n')).toMatch(/could not open a database connection|"level":/)
    expectNoSecret(lines)
  })

  test('maxLifetime retires connections opened with the old password while requests keep succeeding', async () => {
    let token = issued[issued.length - 1] as string
    // The function waits on a gate: while the role's password and the variable change, new
    // connections wait for it (as for a slow token service), bounded by connectTimeout.
    let gate = Promise.resolve()
    const returned: string[] = []
    const applicationName = uniqueName('lifetime')
    const { app, lines } = witness.loggedApp()
    await app.register(pgPoolCore, {
      connection: connectionFor(async () => {
        await gate
        returned.push(token)
        return token
      }),
      pool: { max: 2, maxLifetime: 1_000, applicationName, connectTimeout: 5_000, acquireTimeout: 5_000 },
    })
    app.get('/pid', async (request) => (await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`)[0])
    await app.ready()

    const statuses: number[] = []
    const pidsSeen = new Set<number>()
    let running = true
    const worker = async () => {
      while (running) {
        const response = await witness.capture(app, '/pid')
        statuses.push(response.statusCode)
        if (response.statusCode === 200) pidsSeen.add(response.json().pid)
      }
    }
    const load = [worker(), worker()]
    await waitUntil(() => statuses.length >= 20, 'requests before the rotation', 10_000)
    const oldPids = await backendPids(applicationName)
    expect(oldPids.length).toBeGreaterThan(0)

    const open = deferred()
    gate = open.promise
    const rotated = newPassword()
    await setRolePassword(rotated)
    token = rotated
    open.resolve()
    const rotatedAt = returned.length

    // Every connection opened before the rotation reaches its lifetime and is replaced.
    const replaced = await waitFor(async () => {
      const pids = await backendPids(applicationName)
      return pids.length > 0 && pids.every((pid) => !oldPids.includes(pid))
    }, 10_000)
    running = false
    await Promise.all(load)
    expect(replaced).toBe(true)
    expect(statuses.every((status) => status === 200)).toBe(true)
    expect(statuses.length).toBeGreaterThan(20)
    // New connections were opened after the rotation, each with the new password.
    const sinceRotation = returned.slice(rotatedAt)
    expect(sinceRotation.length).toBeGreaterThan(0)
    expect(new Set(sinceRotation)).toEqual(new Set([rotated]))
    // Requests were served by the new connections.
    expect([...pidsSeen].some((pid) => !oldPids.includes(pid))).toBe(true)
    if (enforced) expect(await canLogin(issued[issued.length - 2] as string)).toBe(false)
    expectNoSecret(lines)
  })

  test("the function's failures become FST_PG_POOL_CONNECT_FAILED, without its error object or any value it returned", async () => {
    const good = issued[issued.length - 1] as string
    let mode: 'ok' | 'throw' | 'reject' | 'empty' | 'hang' = 'ok'
    const { app, lines } = witness.loggedApp()
    await app.register(pgPoolCore, {
      connection: connectionFor(() => {
        if (mode === 'throw') throw Object.assign(new Error(`token service refused; last token ${good}`), { good })
        if (mode === 'reject') return Promise.reject(new Error(`expired: ${encodeURIComponent(good)}`))
        if (mode === 'empty') return ''
        if (mode === 'hang') return new Promise<string>(() => {})
        return good
      }),
      pool: { max: 1, connectTimeout: 500, acquireTimeout: 1_000 },
    })
    app.get('/hold', async (request) => request.db`select 1 as one`)
    await app.ready()
    expect((await witness.capture(app, '/hold')).statusCode).toBe(200)

    const causes: Record<string, string> = {}
    for (const failing of ['throw', 'reject', 'empty'] as const) {
      mode = failing
      const error = await app.pgPool.ping(1_000).catch((e: unknown) => e)
      seen.push(String(error), JSON.stringify(error ?? {}), causeOf(error), (error as Error).stack ?? '')
      expect(error).toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED', statusCode: 503 })
      causes[failing] = causeOf(error)
    }
    expect(causes.throw).toMatch(
      /^PASSWORD_FAILED: connection\.password function failed: token service refused; last token \*\*\*$/,
    )
    expect(causes.reject).toMatch(/^PASSWORD_FAILED: connection\.password function failed: expired: \*\*\*$/)
    expect(causes.empty).toMatch(/returned an empty string/)
    // A function that never settles is bounded like the rest of the opening (for a ping: its timeout).
    mode = 'hang'
    expect(await app.pgPool.ping(500).catch((e: unknown) => e)).toMatchObject({ code: 'FST_PG_POOL_QUERY_TIMEOUT' })

    // A request that needs a new connection gets the coded 503, nothing else.
    for (const password of [() => Promise.reject(new Error('AccessDenied')), () => new Promise<string>(() => {})]) {
      const { app: lazy, lines: lazyLines } = witness.loggedApp()
      await lazy.register(pgPoolCore, {
        connection: connectionFor(password),
        pool: { lazy: true, connectTimeout: 500, acquireTimeout: 2_000 },
      })
      lazy.get('/q', async (request) => request.db`select 1`)
      const refused = await witness.capture(lazy, '/q')
      expect(refused.statusCode).toBe(503)
      expect(refused.json()).toEqual({
        statusCode: 503,
        code: 'FST_PG_POOL_CONNECT_FAILED',
        error: 'Service Unavailable',
        message: 'Could not connect to the database',
      })
      // The log says why (a rejection, or no password within connectTimeout), the body does not.
      expect(lazyLines.join('\n')).toMatch(
        /PASSWORD_FAILED: connection.password function failed: AccessDenied|CONNECT_TIMEOUT/,
      )
    }

    // register fails the same way, and no promise is left unhandled (failOnProcessErrors).
    const { app: eager } = witness.loggedApp()
    const failure = await eager
      .register(pgPoolCore, { connection: connectionFor(async () => Promise.reject(new Error('no token'))) })
      .then(() => eager.ready())
      .then(
        () => undefined,
        (error: unknown) => error,
      )
    expect(failure).toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED' })
    expect(causeOf(failure)).toBe('PASSWORD_FAILED: connection.password function failed: no token')
    expectNoSecret(lines)
  })

  test('a password of another type is refused at register without being shown', async () => {
    const app = Fastify()
    witness.track(app)
    const error = await app
      .register(pgPoolCore, { connection: { host: 'localhost', password: 123456 as unknown as string } })
      .then(() => app.ready())
      .then(
        () => undefined,
        (e: Error & { code?: string }) => e,
      )
    expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error?.message).toBe(
      'Invalid option connection.password: expected a string or a function returning one (or a promise of one), got a number',
    )
  })
})

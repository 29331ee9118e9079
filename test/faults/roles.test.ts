import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, sleep, type TestDatabase, urlAs, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'

// Held attacks from hostile probing (round 8, the server acting at bad moments).
// A role whose rights change while the pool runs: NOLOGIN, a new password, REVOKE CONNECT,
// CONNECTION LIMIT (role and database), DROP ROLE. Client status and body, health, metrics,
// pg_stat_activity.

let db: TestDatabase
let dbName: string
const roles: string[] = []
let app: FastifyInstance | undefined
let passwordAuth = false
failOnProcessErrors()

const newRole = async (password: string) => {
  const role = `probe_srv_${Math.random().toString(36).slice(2, 8)}`
  roles.push(role)
  await db.admin.unsafe(`create role ${role} login password '${password}'`)
  await db.sql.unsafe(`grant select, insert, update on t to ${role}`)
  return role
}

beforeAll(async () => {
  db = await createTestDatabase()
  dbName = new URL(db.directUrl).pathname.slice(1)
  await db.sql`create table t (id int primary key, v int)`
  await db.sql`insert into t values (1, 0)`
  const role = await newRole('right-pass-1')
  const wrong = postgres(urlAs(db.directUrl, role, 'wrong-pass'), { max: 1, onnotice: () => {}, connect_timeout: 3 })
  passwordAuth = await wrong`select 1`.then(
    () => false,
    () => true,
  )
  await wrong.end({ timeout: 1 })
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await db.admin.unsafe(`alter database ${dbName} connection limit -1`)
  await db.admin.unsafe(`grant connect on database ${dbName} to public`)
})
afterAll(() => db.drop(roles))

async function umbrella(url: string, pool: Record<string, unknown> = {}) {
  const logs: string[] = []
  const a = Fastify({
    logger: { level: 'debug', stream: { write: (line: string) => void logs.push(line) } },
  })
  await a.register(pgPool, {
    connection: url,
    pool: {
      max: 2,
      acquireTimeout: 2_000,
      connectTimeout: 1_000,
      statementTimeout: 3_000,
      applicationName: `probe-srv-${Math.random().toString(36).slice(2, 8)}`,
      ...pool,
    },
    health: { cacheTime: 0, pingTimeout: 1_000 },
    metrics: {},
    backpressure: false,
  })
  a.get('/v', async (request) => (await request.db`select v from t where id = 1`)[0])
  a.get('/sleep', async (request) => (await request.db`select pg_sleep(0.3), 1 as one`)[0])
  app = a
  return { app: a, logs }
}

const metric = (text: string, name: string) =>
  text
    .split('\n')
    .filter((line) => line.startsWith(name))
    .join('\n')

const counter = (text: string, series: string) => {
  const line = text.split('\n').find((l) => l.startsWith(series))
  return line === undefined ? Number.NaN : Number(line.split(' ').pop())
}

describe('the role changes under a running pool', () => {
  test('NOLOGIN, then LOGIN again: coded 503 without secrets, health fails then passes, metrics count it', async () => {
    const password = 'sekrit-pw-nologin'
    const role = await newRole(password)
    const { app, logs } = await umbrella(urlAs(db.directUrl, role, password), { idleTimeout: 0 })
    const base = await listen(app)
    expect((await fetch(`${base}/v`)).status).toBe(200)
    expect((await fetch(`${base}/health`)).status).toBe(200)
    await db.admin.unsafe(`alter role ${role} nologin`)
    // Connections already open keep working: the change applies to new logins.
    expect((await fetch(`${base}/v`)).status).toBe(200)
    await db.terminate(app.pgPool.options.applicationName)
    await waitFor(async () => (await db.countConnections(app.pgPool.options.applicationName)) === 0)
    await sleep(100)
    const failed = await fetch(`${base}/v`)
    const body = await failed.text()
    expect(failed.status, body).toBe(503)
    expect(JSON.parse(body).code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect(failed.headers.get('retry-after')).toBe('1')
    expect(body).not.toContain(password)
    expect(body).not.toContain(role)
    const health = await fetch(`${base}/health`)
    const healthBody = await health.text()
    expect(health.status, healthBody).toBe(503)
    expect(healthBody).not.toContain(role)
    expect(healthBody).not.toContain(password)
    const metrics = await (await fetch(`${base}/metrics`)).text()
    expect(counter(metrics, 'pg_pool_connection_errors_total{pool="primary"}')).toBeGreaterThan(0)
    expect(counter(metrics, 'pg_pool_acquires_total{pool="primary",result="error"}')).toBeGreaterThan(0)
    expect(metrics).not.toContain(password)
    await db.admin.unsafe(`alter role ${role} login`)
    expect(
      await waitFor(async () => (await fetch(`${base}/v`)).status === 200, 8_000, 100),
      'the pool serves again once the role may log in',
    ).toBe(true)
    expect((await fetch(`${base}/health`)).status).toBe(200)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
    expect(logs.join('\n')).not.toContain(password)
    const after = await (await fetch(`${base}/metrics`)).text()
    const opened = counter(after, 'pg_pool_connections_opened_total{pool="primary"}')
    const closed = metric(after, 'pg_pool_connections_closed_total')
      .split('\n')
      .filter(Boolean)
      .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0)
    expect(opened - closed, after).toBe(app.pgPool.stats().open)
  })

  test('password changed: open connections keep serving; new ones fail coded, the old password never shows', async () => {
    const password = 'old-pass-visible-1'
    const role = await newRole(password)
    const { app, logs } = await umbrella(urlAs(db.directUrl, role, password), { idleTimeout: 0 })
    const base = await listen(app)
    expect((await fetch(`${base}/v`)).status).toBe(200)
    await db.admin.unsafe(`alter role ${role} password 'new-pass-visible-2'`)
    expect((await fetch(`${base}/v`)).status).toBe(200)
    await db.terminate(app.pgPool.options.applicationName)
    await waitFor(async () => (await db.countConnections(app.pgPool.options.applicationName)) === 0)
    await sleep(100)
    const res = await fetch(`${base}/v`)
    const body = await res.text()
    if (passwordAuth) {
      expect(res.status, body).toBe(503)
      expect(JSON.parse(body).code).toBe('FST_PG_POOL_CONNECT_FAILED')
      expect((await fetch(`${base}/health`)).status).toBe(503)
    } else expect(res.status).toBe(200)
    const all = [
      body,
      logs.join('\n'),
      await (await fetch(`${base}/metrics`)).text(),
      await (await fetch(`${base}/health`)).text(),
    ].join('\n')
    expect(all).not.toContain(password)
    expect(all).not.toContain('new-pass-visible-2')
  })

  test('REVOKE CONNECT on the database: coded 503, recovers after GRANT', async () => {
    const password = 'pw-revoke'
    const role = await newRole(password)
    const { app } = await umbrella(urlAs(db.directUrl, role, password), { idleTimeout: 0 })
    const base = await listen(app)
    expect((await fetch(`${base}/v`)).status).toBe(200)
    await db.admin.unsafe(`revoke connect on database ${dbName} from public`)
    await db.terminate(app.pgPool.options.applicationName)
    await waitFor(async () => (await db.countConnections(app.pgPool.options.applicationName)) === 0)
    await sleep(100)
    const res = await fetch(`${base}/v`)
    const body = await res.text()
    expect(res.status, body).toBe(503)
    expect(JSON.parse(body).code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect(body).not.toContain(dbName)
    expect((await fetch(`${base}/health`)).status).toBe(503)
    await db.admin.unsafe(`grant connect on database ${dbName} to public`)
    expect(await waitFor(async () => (await fetch(`${base}/v`)).status === 200, 8_000, 100)).toBe(true)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
  })

  for (const where of ['role', 'database'] as const) {
    test(`CONNECTION LIMIT 1 on the ${where}, pool max 3: concurrent requests are served by the connection it has`, async () => {
      const password = 'pw-limit'
      const role = await newRole(password)
      const { app } = await umbrella(urlAs(db.directUrl, role, password), {
        max: 3,
        idleTimeout: 0,
        acquireTimeout: 4_000,
        maxWaiting: 50,
      })
      const base = await listen(app)
      expect((await fetch(`${base}/v`)).status).toBe(200)
      expect(app.pgPool.stats().open).toBe(1)
      await db.admin.unsafe(
        where === 'role' ? `alter role ${role} connection limit 1` : `alter database ${dbName} connection limit 1`,
      )
      // 6 requests of 0.3 s on the one connection: 1.8 s, inside acquireTimeout (4 s).
      const responses = await Promise.all(Array.from({ length: 6 }, () => fetch(`${base}/sleep`)))
      const bodies = await Promise.all(responses.map((r) => r.text()))
      expect(
        responses.map((r) => r.status),
        bodies.join('\n'),
      ).toEqual(Array(6).fill(200))
      expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0, connecting: 0 })
      expect(await db.countConnections(app.pgPool.options.applicationName)).toBeLessThanOrEqual(1)
    })
  }

  test('DROP ROLE while its connections are pooled: coded errors, no crash, no hang, no leaked lease', async () => {
    const password = 'pw-drop'
    const role = await newRole(password)
    const { app } = await umbrella(urlAs(db.directUrl, role, password), { max: 2, idleTimeout: 0 })
    const base = await listen(app)
    expect((await fetch(`${base}/v`)).status).toBe(200)
    await db.sql.unsafe(`revoke all on t from ${role}`)
    await db.admin.unsafe(`drop role ${role}`)
    const statuses: number[] = []
    const codes: string[] = []
    for (let i = 0; i < 4; i++) {
      const res = await fetch(`${base}/v`)
      statuses.push(res.status)
      codes.push(((await res.json()) as { code?: string }).code ?? '')
    }
    for (const [i, status] of statuses.entries()) {
      expect(status, codes.join(',')).toBeGreaterThanOrEqual(500)
      expect(codes[i]).toMatch(/^(FST_PG_POOL_\w+|\w{5})$/)
    }
    expect((await fetch(`${base}/health`)).status).toBe(503)
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
  })
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, urlAs } from '../../support/database.js'
import { listen } from '../../support/http.js'

declare module '@fastify-pg-pool/core' {
  interface PgPoolInstances {
    orders: true
  }
}

// Held attacks (hostile probing, round two of the operational fixes, b8e29c5: a ping refused with
// 53300 while the pool holds open connections warns). Health README: 53300 from max_connections, or
// a role's or database's CONNECTION LIMIT, warns while the pool's connections serve; any other
// connect error (here 28000, a role no longer allowed to log in) fails readiness; a named
// instance in requireInstances is judged as the primary; bodies hold no server message, role or
// database name.

let db: TestDatabase
let app: FastifyInstance | undefined
const tag = Math.random().toString(16).slice(2, 8)
const limited = `ops_slot_${tag}`
const gated = `ops_gate_${tag}`
const password = `pw_${tag}`
let dbName: string
beforeAll(async () => {
  db = await createTestDatabase()
  dbName = new URL(db.directUrl).pathname.slice(1)
  await db.admin.unsafe(`create role ${limited} login password '${password}'`)
  await db.admin.unsafe(`create role ${gated} login password '${password}'`)
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await db.admin.unsafe(`alter database ${dbName} connection limit -1`)
})
afterAll(() => db.drop([limited, gated]))

/** Fills the pool (max 2) with two concurrent slow requests, then reads /health/ready. */
async function readyAfterFilling(a: FastifyInstance, route: string): Promise<{ status: number; body: string }> {
  const base = await listen(a)
  const work = await Promise.all([1, 2].map(() => fetch(`${base}${route}`)))
  expect(work.map((r) => r.status)).toEqual([200, 200])
  const ready = await fetch(`${base}/health/ready`)
  return { status: ready.status, body: await ready.text() }
}

function expectNoServerDetails(body: string): void {
  for (const secret of [limited, gated, dbName, password, 'too many', 'permitted', 'FATAL']) {
    expect(body).not.toContain(secret)
  }
}

describe('53300 and other refusals of the ping', () => {
  test("a database's CONNECTION LIMIT = pool.max, the pool full and serving: 200 warn, no server text", async () => {
    await db.admin.unsafe(`alter database ${dbName} connection limit 2`)
    const a = Fastify()
    app = a
    await a.register(pgPool, {
      connection: urlAs(db.url, limited, password),
      pool: { max: 2, idleTimeout: 0, applicationName: `ops-slot-${tag}` },
      health: { cacheTime: 0 },
      metrics: false,
      backpressure: false,
    })
    a.get('/work', async (request) => (await request.db`select pg_sleep(0.2), 1 as one`)[0])
    const ready = await readyAfterFilling(a, '/work')
    expect(ready.status, ready.body).toBe(200)
    expect(JSON.parse(ready.body)).toMatchObject({ status: 'warn' })
    expect(ready.body).toContain('no connection slot for the ping (53300)')
    expectNoServerDetails(ready.body)
  })

  test('a named instance in requireInstances at its limit: warns like the primary (200)', async () => {
    await db.admin.unsafe(`alter database ${dbName} connection limit 2`)
    const a = Fastify()
    app = a
    // The default instance as the superuser (exempt from a database's limit), `orders` as the role.
    await a.register(pgPool, {
      connection: db.url,
      pool: { max: 1, applicationName: `ops-main-${tag}` },
      health: { cacheTime: 0, requireInstances: ['orders'] },
      metrics: false,
      backpressure: false,
    })
    await a.register(pgPoolCore, {
      name: 'orders',
      connection: urlAs(db.url, limited, password),
      pool: { max: 2, idleTimeout: 0, applicationName: `ops-orders-${tag}` },
    })
    a.get('/orders', async (request) => (await request.dbs.orders`select pg_sleep(0.2), 1 as one`)[0])
    const ready = await readyAfterFilling(a, '/orders')
    expect(ready.status, ready.body).toBe(200)
    expect(JSON.parse(ready.body)).toMatchObject({ status: 'warn' })
    expect(ready.body).toContain('orders: no connection slot for the ping (53300)')
    expectNoServerDetails(ready.body)
  })

  test('28000 (the role may no longer log in) while the pool holds connections: 503, no server text', async () => {
    const a = Fastify()
    app = a
    await a.register(pgPool, {
      connection: urlAs(db.url, gated, password),
      pool: { max: 2, idleTimeout: 0, applicationName: `ops-gate-${tag}` },
      health: { cacheTime: 0 },
      metrics: false,
      backpressure: false,
    })
    a.get('/work', async (request) => (await request.db`select pg_sleep(0.2), 1 as one`)[0])
    const base = await listen(a)
    expect((await fetch(`${base}/health/ready`)).status).toBe(200)
    await Promise.all([1, 2].map(() => fetch(`${base}/work`)))
    await db.admin.unsafe(`alter role ${gated} nologin`)
    try {
      const ready = await fetch(`${base}/health/ready`)
      const body = await ready.text()
      expect(ready.status, body).toBe(503)
      expect(body).toContain('database unreachable (FST_PG_POOL_CONNECT_FAILED)')
      expectNoServerDetails(body)
      // The pool's open connections still serve.
      expect((await fetch(`${base}/work`)).status).toBe(200)
    } finally {
      await db.admin.unsafe(`alter role ${gated} login`)
    }
  })
})

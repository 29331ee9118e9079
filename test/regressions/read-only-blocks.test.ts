// Found by hostile probing (failed on 57373f9): a 25006 inside a `db.begin('read only')` block on a
// host-list primary was taken for a failover (503 NOT_PRIMARY, the connection retired), and a
// readOnly route served by the primary could write through `db.begin('read write')`.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

let db: TestDatabase
const apps: FastifyInstance[] = []

/** The test database as a two-host list (the same server twice): a primary that can fail over. */
function hostList(url: string): string {
  const parsed = new URL(url)
  const hostPort = `${parsed.hostname}:${parsed.port}`
  return url.replace(hostPort, `${hostPort},${hostPort}`)
}

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table items (id serial primary key, v text)`
})
afterAll(async () => {
  await Promise.all(apps.map((app) => app.close()))
  await db?.drop()
})

describe('25006 on a healthy host-list primary', () => {
  test('a write inside request.db.begin("read only") is the holder\'s 25006, not a failover (NOT_PRIMARY)', async () => {
    const app = Fastify()
    apps.push(app)
    await app.register(pgPoolCore, { connection: hostList(db.directUrl), pool: { max: 2 } })
    const closed: string[] = []
    app.pgPool.on('close', (reason) => closed.push(reason))
    app.post('/ro-block', async (request) =>
      request.db.begin('read only', async (tx) => tx`insert into items (v) values ('x')`),
    )
    const response = await app.inject({ method: 'POST', url: '/ro-block' })
    // Same as a route transaction with readOnly: the server is the primary, the holder asked for a
    // read-only transaction: 500 with code 25006, and no connection retired.
    expect({ status: response.statusCode, code: response.json().code, closed }).toEqual({
      status: 500,
      code: '25006',
      closed: [],
    })
  })

  test('app.db.begin("read only") write: 25006, not NOT_PRIMARY', async () => {
    const app = Fastify()
    apps.push(app)
    await app.register(pgPoolCore, { connection: hostList(db.directUrl), pool: { max: 2 } })
    const error = await app.db
      .begin('read only', async (tx) => tx`insert into items (v) values ('y')`)
      .catch((e: { code?: string }) => e)
    expect((error as { code?: string }).code).toBe('25006')
  })

  test('control: a route transaction with readOnly is a plain 25006', async () => {
    const app = Fastify()
    apps.push(app)
    await app.register(pgPoolCore, { connection: hostList(db.directUrl), pool: { max: 2 } })
    app.post(
      '/ro-tx',
      { config: { db: { transaction: { readOnly: true } } } },
      async (request) => request.db`insert into items (v) values ('x')`,
    )
    const response = await app.inject({ method: 'POST', url: '/ro-tx' })
    expect(response.json().code).toBe('25006')
  })
})

describe('a read-only route served by the primary cannot write', () => {
  test('request.db.begin("read write") on a readOnly route writes on the primary', async () => {
    const app = Fastify()
    apps.push(app)
    await app.register(pgPoolCore, { connection: db.directUrl, pool: { max: 2 } })
    app.post('/sneaky', { config: { db: { readOnly: true } } }, async (request) =>
      request.db.begin('read write', async (tx) => tx`insert into items (v) values ('written-by-readonly-route')`),
    )
    const response = await app.inject({ method: 'POST', url: '/sneaky' })
    const [row] = await db.sql`select count(*)::int as n from items where v = 'written-by-readonly-route'`
    // "A read-only route cannot write, wherever it lands": on a replica this is 25006.
    expect({ status: response.statusCode, rows: row?.n }).toEqual({ status: 500, rows: 0 })
  })
})

describe('a read-only route served by the primary can still read in a block', () => {
  test("request.db.begin('read write') reads, and the block is read-only", async () => {
    const app = Fastify()
    apps.push(app)
    await app.register(pgPoolCore, { connection: db.directUrl, pool: { max: 2 } })
    app.get('/reads', { config: { db: { readOnly: true } } }, async (request) =>
      request.db.begin('read write', async (tx) => {
        const [row] = await tx<{ ro: string }[]>`select current_setting('transaction_read_only') as ro`
        return row
      }),
    )
    const response = await app.inject('/reads')
    expect({ status: response.statusCode, body: response.json() }).toEqual({ status: 200, body: { ro: 'on' } })
  })
})

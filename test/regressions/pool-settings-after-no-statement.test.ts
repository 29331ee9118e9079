import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing (fourth round), failing on 33db61c: in the default mode the reset was
// skipped when the holder ran no statement of its own, but the pool had already set its own
// settings on the session when the connection came (a read-only default for a readOnly route the
// primary served, the leaseApplicationName label). An onLease that refused the request left them:
// the next request's write failed with 25006, app.db showed the old label. They are now put back.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

function routes(app: FastifyInstance) {
  app.get('/read', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db<{ pid: number }[]>`select pg_backend_pid() as pid`
    return row
  })
  app.post('/write', async (request) => {
    const [row] = await request.db<{ pid: number; ro: string; app: string }[]>`
      with i as (insert into ledger (note) values ('w') returning id)
      select pg_backend_pid() as pid, current_setting('default_transaction_read_only') as ro,
        current_setting('application_name') as app from i`
    return row
  })
  app.get('/state', async (request) => {
    const [row] = await request.db<{ pid: number; ro: string; app: string }[]>`
      select pg_backend_pid() as pid, current_setting('default_transaction_read_only') as ro,
        current_setting('application_name') as app`
    return row
  })
}

describe('onLease refuses the request before any statement ran', () => {
  for (const mode of ['always', 'rollback', 'never'] as const) {
    test(`mode ${mode}: readOnly route whose onLease throws, then a write on the same connection`, async () => {
      current = await coreApp(
        db.url,
        { max: 1, sessionReset: mode },
        {},
        {
          leaseApplicationName: (request, route) => (request ? `label ${route}` : undefined),
          onLease: async (request) => {
            if (request.headers['x-tenant'] === undefined)
              throw Object.assign(new Error('no tenant'), { statusCode: 401 })
          },
        },
      )
      routes(current.app)
      const before = (await current.app.inject({ url: '/state', headers: { 'x-tenant': 'a' } })).json()
      const refused = await current.app.inject('/read')
      expect(refused.statusCode).toBe(401)
      const write = await current.app.inject({ method: 'POST', url: '/write', headers: { 'x-tenant': 'a' } })
      expect({ write: write.statusCode, body: write.statusCode === 200 ? '' : write.body }).toEqual({
        write: 200,
        body: '',
      })
      expect(write.json().pid).toBe(before.pid)
      await current.app.inject('/read')
      // outside requests: app.db is never labelled, and was not made read-only
      const [outside] = await current.app.db<{ pid: number; ro: string; app: string }[]>`
        select pg_backend_pid() as pid, current_setting('default_transaction_read_only') as ro,
          current_setting('application_name') as app`
      expect({ pid: outside?.pid, ro: outside?.ro, app: outside?.app }).toEqual({
        pid: before.pid,
        ro: 'off',
        app: current.applicationName,
      })
    })
  }
})

describe('onLease refuses a labelled request (default reset)', () => {
  test("the refused request's label must not stay on the connection for app.db", async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        leaseApplicationName: (request, route) => (request ? `label ${route}` : undefined),
        onLease: async (request) => {
          if (request.headers['x-tenant'] === undefined)
            throw Object.assign(new Error('no tenant'), { statusCode: 401 })
        },
      },
    )
    routes(current.app)
    await current.app.inject({ url: '/state', headers: { 'x-tenant': 'a' } })
    expect((await current.app.inject('/state')).statusCode).toBe(401)
    const [outside] = await current.app.db<{ app: string }[]>`select current_setting('application_name') as app`
    expect(outside?.app).toBe(current.applicationName)
  })
})

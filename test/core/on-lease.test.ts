import type { FastifyRequest } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (tenant text not null, body text not null)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const tenantOf = (request: FastifyRequest) => String(request.headers['x-tenant'] ?? 'none')

describe('onLease', () => {
  test('sets session context before the handler’s first query, and it never reaches the next request', async () => {
    const calls: string[] = []
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onLease: async (request, sql) => {
          calls.push(tenantOf(request))
          await sql`select set_config('app.tenant', ${tenantOf(request)}, false)`
        },
      },
    )
    current.app.get('/whoami', async (request) => {
      const [row] = await request.db`select current_setting('app.tenant', true) as tenant, pg_backend_pid() as pid`
      return row
    })
    current.app.get('/plain', { config: { db: false } }, async () => ({ ok: true }))
    const a = await current.app.inject({ url: '/whoami', headers: { 'x-tenant': 'a' } })
    const b = await current.app.inject({ url: '/whoami', headers: { 'x-tenant': 'b' } })
    expect(a.json().tenant).toBe('a')
    expect(b.json().tenant).toBe('b')
    expect(a.json().pid).toBe(b.json().pid)
    // A route that never queries never leases, so the hook does not run for it.
    await current.app.inject({ url: '/plain' })
    expect(calls).toEqual(['a', 'b'])
    // After the lease came back, the setting is gone from the (only) connection.
    const [after] = await current.app.db`select coalesce(current_setting('app.tenant', true), '') as tenant`
    expect(after?.tenant).toBe('')
  })

  test('runs inside the route transaction, so set_config(..., true) holds for the handler', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onLease: async (request, sql) => {
          await sql`select set_config('app.tenant', ${tenantOf(request)}, true)`
        },
      },
    )
    current.app.post('/note', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values (current_setting('app.tenant'), 'x')`
      const [row] = await request.db`select current_setting('app.tenant') as tenant`
      return row
    })
    const res = await current.app.inject({ method: 'POST', url: '/note', headers: { 'x-tenant': 't1' } })
    expect(res.statusCode).toBe(200)
    expect(res.json().tenant).toBe('t1')
    expect(await db.sql`select tenant from note where tenant = 't1'`).toHaveLength(1)
  })

  test('a hook that throws fails the request with its error, and the connection comes back', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onLease: async (request) => {
          if (request.headers['x-tenant'] === undefined) {
            throw Object.assign(new Error('tenant required'), { statusCode: 401 })
          }
        },
      },
    )
    let ran = 0
    current.app.get('/count', async (request) => {
      ran++
      const [row] = await request.db`select count(*)::int as n from note`
      return row
    })
    const refused = await current.app.inject({ url: '/count' })
    expect(refused.statusCode).toBe(401)
    expect(refused.json().message).toBe('tenant required')
    expect(ran).toBe(1)
    expect(current.app.pgPool.stats()).toMatchObject({ leased: 0, idle: 1 })
    const ok = await current.app.inject({ url: '/count', headers: { 'x-tenant': 'a' } })
    expect(ok.statusCode).toBe(200)
  })

  test('a non-function onLease fails at register with a coded error', async () => {
    await expect(coreApp(db.url, {}, {}, { onLease: 'nope' as never })).rejects.toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
    })
  })
})

import type { FastifyRequest } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'

let db: TestDatabase
let current: TestApp | undefined
// Roles are cluster-wide: a name of this file's own.
const role = uniqueName('fpp_rls').replace('-', '_')
failOnProcessErrors()

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create role ${role} nologin`)
  await db.sql`create table docs (id serial primary key, tenant text not null, body text not null)`
  await db.sql.unsafe(`grant select, insert on docs to ${role}; grant usage on sequence docs_id_seq to ${role}`)
  await db.sql`alter table docs enable row level security`
  await db.sql.unsafe(`create policy tenant_rows on docs to ${role}
    using (tenant = current_setting('app.tenant_id', true))
    with check (tenant = current_setting('app.tenant_id', true))`)
  await db.sql`insert into docs (tenant, body) values ('a', 'a1'), ('a', 'a2'), ('b', 'b1'), ('b', 'b2'), ('b', 'b3')`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
  await db.sql`delete from docs where id > 5`
})
afterAll(async () => {
  await db.sql.unsafe(`drop table docs; drop role ${role}`)
  await db.drop()
})

const tenantOf = (request: FastifyRequest) => String(request.headers['x-tenant'] ?? '')

interface Seen {
  pid: number
  tenants: string[]
  rows: number
  user: string
}

/** An app whose connections act as the tenant of each request (superusers bypass RLS). */
async function tenantApp(local: boolean) {
  const app = await coreApp(
    db.url,
    { max: 1, maxWaiting: 100 },
    {},
    {
      onLease: async (request, leaseDb) => {
        await leaseDb`select set_config('app.tenant_id', ${tenantOf(request)}, ${local}), set_config('role', ${role}, ${local})`
      },
    },
  )
  const config = local ? { db: { transaction: true } } : {}
  app.app.get('/docs', { config }, async (request): Promise<Seen> => {
    const rows = await request.db<{ tenant: string }[]>`select tenant from docs order by id`
    // A second statement after a pause: another request may have been served in between.
    await new Promise((resolve) => setTimeout(resolve, 2))
    const [me] = await request.db<{ pid: number; user: string }[]>`select pg_backend_pid() as pid, current_user as user`
    return {
      pid: me?.pid ?? 0,
      tenants: [...new Set(rows.map((r) => r.tenant))],
      rows: rows.length,
      user: me?.user ?? '',
    }
  })
  app.app.post('/docs', { config }, async (request) => {
    const { tenant, body } = request.body as { tenant: string; body: string }
    await request.db`insert into docs (tenant, body) values (${tenant}, ${body})`
    return { ok: true }
  })
  return app
}

for (const local of [false, true]) {
  const flavour = local ? 'set_config(..., true) in a route transaction' : 'set_config(..., false) on the session'
  describe(`row-level security through onLease: ${flavour}`, () => {
    test('each request reads only its tenant; no tenant reads nothing', async () => {
      current = await tenantApp(local)
      const { app } = current
      const get = async (tenant?: string) =>
        (await app.inject({ url: '/docs', headers: tenant ? { 'x-tenant': tenant } : {} })).json() as Seen
      expect(await get('a')).toMatchObject({ tenants: ['a'], rows: 2, user: role })
      expect(await get('b')).toMatchObject({ tenants: ['b'], rows: 3, user: role })
      // Right after tenant b on the same connection: nothing of b's setting is left.
      expect(await get()).toMatchObject({ tenants: [], rows: 0 })
      expect(await get('a')).toMatchObject({ tenants: ['a'], rows: 2 })
    })

    test('interleaved requests of two tenants on one connection never see each other', async () => {
      current = await tenantApp(local)
      const { app } = current
      const tenants = Array.from({ length: 40 }, (_, i) => ['a', 'b', ''][i % 3] as string)
      const seen = await Promise.all(
        tenants.map(async (tenant) => {
          const response = await app.inject({ url: '/docs', headers: tenant ? { 'x-tenant': tenant } : {} })
          return { tenant, status: response.statusCode, body: response.json() as Seen }
        }),
      )
      for (const { tenant, status, body } of seen) {
        expect(status).toBe(200)
        expect(body.tenants).toEqual(tenant ? [tenant] : [])
        expect(body.rows).toBe({ a: 2, b: 3, '': 0 }[tenant])
      }
      // One connection served all of them.
      expect(new Set(seen.map((s) => s.body.pid)).size).toBe(1)
      // After all that, the pool's own work (app.db) runs as the connecting role again.
      const [me] = await app.db<{ user: string; tenant: string | null }[]>`
        select current_user as user, current_setting('app.tenant_id', true) as tenant`
      expect(me?.user).not.toBe(role)
      expect(me?.tenant ?? '').toBe('')
    })

    test("a tenant cannot write another tenant's row", async () => {
      current = await tenantApp(local)
      const { app } = current
      const denied = await app.inject({
        method: 'POST',
        url: '/docs',
        headers: { 'x-tenant': 'a' },
        payload: { tenant: 'b', body: 'smuggled' },
      })
      expect(denied.statusCode).toBe(500)
      expect(denied.json()).toMatchObject({ code: '42501' })
      const allowed = await app.inject({
        method: 'POST',
        url: '/docs',
        headers: { 'x-tenant': 'a' },
        payload: { tenant: 'a', body: `a-${local}` },
      })
      expect(allowed.statusCode).toBe(200)
      expect(await db.sql`select tenant from docs where body in ('smuggled', ${`a-${local}`})`).toEqual([
        { tenant: 'a' },
      ])
    })
  })
}

test('onLease that throws refuses the request with its status; the connection stays usable', async () => {
  current = await coreApp(
    db.url,
    { max: 1 },
    {},
    {
      onLease: async (request, leaseDb) => {
        const tenant = tenantOf(request)
        if (!tenant) throw Object.assign(new Error('x-tenant header required'), { statusCode: 401 })
        await leaseDb`select set_config('app.tenant_id', ${tenant}, false), set_config('role', ${role}, false)`
      },
    },
  )
  const { app } = current
  app.get('/count', async (request) => (await request.db`select count(*)::int as n from docs`)[0])
  const refused = await app.inject('/count')
  expect(refused.statusCode).toBe(401)
  expect(refused.json()).toMatchObject({ message: 'x-tenant header required' })
  expect((await app.inject({ url: '/count', headers: { 'x-tenant': 'b' } })).json()).toEqual({ n: 3 })
  expect(await waitFor(() => app.pgPool.stats().idle === 1)).toBe(true)
  expect(app.pgPool.stats()).toMatchObject({ leased: 0, open: 1 })
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Found by a second round of hostile probing (failed on 1c7775f): on a readOnly route served by
// the primary, Promise.all of a begin('read write') block and a plain insert committed the insert:
// it went out between the block's BEGIN and the SET TRANSACTION READ ONLY that followed it. A
// read-only lease's BEGIN now ends in READ ONLY (the last mode wins), so nothing comes between;
// app.db.replica's blocks are read-only too (they were only when the pool had no usable replica).

let db: TestDatabase
let current: TestApp | undefined
let ro: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
beforeEach(async () => {
  await db.sql`truncate ledger`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
  await ro?.close()
  ro = undefined
})
afterAll(() => db.drop())

type Db = FastifyRequest['db']

type Sql = ((strings: TemplateStringsArray, ...values: unknown[]) => Promise<Record<string, unknown>[]>) & {
  begin: (fn: (tx: Sql) => Promise<unknown>) => Promise<unknown>
}

async function readOnlyApp(): Promise<FastifyInstance> {
  // The "replica" is the primary itself: never a standby, so the primary serves reads, read-only.
  const app = Fastify()
  await app.register(pgPoolCore, {
    connection: db.url,
    replicas: [db.url],
    replica: { lagInterval: 50 },
    pool: { max: 2 },
    leaseApplicationName: () => 'probe-ro',
  })
  return app
}

describe('reads served by the primary cannot write', () => {
  test.each([
    [
      'begin(read write) with a savepoint',
      async (db: Db) => db.begin('read write', (tx) => tx.savepoint((s) => s`insert into ledger (note) values ('sp')`)),
    ],
    [
      'Promise.all of begin(read write) and a plain insert',
      async (db: Db) =>
        Promise.all([db.begin('read write', (tx) => tx`select 1`), db`insert into ledger (note) values ('beside')`]),
    ],
    [
      'Promise.all of a read and begin(read write) insert',
      async (db: Db) =>
        Promise.all([
          db`select pg_sleep(0.05)`,
          db.begin('read write', (tx) => tx`insert into ledger (note) values ('queued begin')`),
        ]),
    ],
    ['plain insert', async (db: Db) => db`insert into ledger (note) values ('plain')`],
  ])('%s: refused, nothing written', async (_, fn) => {
    ro = await readOnlyApp()
    ro.post('/w', { config: { db: { readOnly: true } } }, async (request) => {
      await fn(request.db)
      return { ok: true }
    })
    await ro.ready()
    const res = await ro.inject({ method: 'POST', url: '/w' })
    const written = await db.sql`select note from ledger`
    expect({ status: res.statusCode, written }).toEqual({ status: 500, written: [] })
    expect(await waitFor(() => (ro as FastifyInstance).pgPool.stats().leased === 0, 2_000)).toBe(true)
  })

  test('app.db.replica.begin(read write) on the primary: refused', async () => {
    ro = await readOnlyApp()
    await ro.ready()
    const replica = (ro.db as unknown as { replica: FastifyInstance['db'] }).replica
    const outcome = await replica
      .begin('read write', (tx) => tx`insert into ledger (note) values ('job')`)
      .then(
        () => 'ran',
        (e: { code?: string }) => e.code,
      )
    expect(outcome).toBe('25006')
    expect(await db.sql`select note from ledger`).toEqual([])
  })
})

describe('onLease while the handler waits', () => {
  test("onLease throws while the handler's first begin() waits: the hook's status, pool idle", async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onLease: (async (_r: unknown, sql: Sql) => {
          await sql`select pg_sleep(0.05)`
          throw Object.assign(new Error('no tenant'), { statusCode: 403 })
        }) as never,
      },
    )
    const { app } = current
    app.post('/t', async (request) => {
      await Promise.all([
        request.db.begin(async (tx) => tx`insert into ledger (note) values ('in block')`),
        request.db`insert into ledger (note) values ('plain')`,
      ])
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/t' })
    expect(res.statusCode, res.body).toBe(403)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 2_000)).toBe(true)
    expect(await db.sql`select note from ledger`).toEqual([])
    const again = await app.inject({ method: 'POST', url: '/t' })
    expect(again.statusCode).toBe(403)
  })

  test('a slow onLease, then Promise.all of a plain statement and begin(): order kept, both run after the hook', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onLease: (async (_r: unknown, sql: Sql) => {
          await sql`select pg_sleep(0.05)`
          await sql`insert into ledger (note) values ('hook')`
        }) as never,
      },
    )
    const { app } = current
    app.post('/t', async (request) => {
      const plain = request.db`insert into ledger (note) values ('plain')`
      await Promise.all([plain, request.db.begin(async (tx) => tx`insert into ledger (note) values ('block')`)])
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/t' })
    expect(res.statusCode, res.body).toBe(200)
    const rows = (await db.sql<{ note: string }[]>`select note from ledger order by id`).map((r) => r.note)
    expect(rows[0]).toBe('hook')
    expect(rows.sort()).toEqual(['block', 'hook', 'plain'])
  })
})

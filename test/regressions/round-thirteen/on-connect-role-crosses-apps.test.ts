// DEFECT (probe-pgbouncer, high). What the user does: follows the core README's onConnect example
// (`onConnect: async (db) => { await db\`set role app_reader\` }`, "once per new server
// connection") on an app with `pool.pgbouncer: true`, which the README says "makes every feature
// safe behind PgBouncer in transaction mode"; a second service (or any other client) uses the same
// PgBouncer database/user. What they see: the SET ROLE lands on whichever PgBouncer server
// connection served that one statement and stays there: the other service's requests run as
// app_reader (first test), while the app's own requests, served by another server connection, run
// as the login role, a superuser here, with every privilege app_reader was meant to withhold
// (second test). Nothing refuses, warns or documents it (docs/pgbouncer-and-sizing.md never
// mentions onConnect). What they should see: `onConnect` refused with `pool.pgbouncer: true`
// (FST_PG_POOL_INVALID_OPTION), as `leaseApplicationName` (plugin.ts:176) and `listen()`
// (listener.ts:184) already are for the same reason, or at the least a warning and a line in the
// docs' table. Cause: packages/core/src/plugin.ts:156-159 accepts onConnect whatever
// options.pgbouncer says, and connection-factory.ts:170-190 runs it (and its capture, which may
// itself land on another server connection) on a client connection whose server session is
// PgBouncer's. Fix: in plugin.ts next to the leaseApplicationName check, `if (onConnect !==
// undefined && options.pgbouncer) throw invalidOption('onConnect', 'it sets session state on a
// server connection PgBouncer in transaction mode hands to other clients; use onLease with
// transaction-local settings on transaction routes')` (and the same for a replica's pool).
// Failed on a718e61: "the other app runs as the role of this app: expected 'probe_reader_…' to be
// 'postgres'" (and "the request runs as the login, not as onConnect set: expected 'postgres' to
// be 'probe_reader_…'").
// Changed when moved: the fix refuses onConnect with pool.pgbouncer: true (and with a replica's
// pool.pgbouncer: true) at register, so the apps of the original tests can no longer be built;
// the tests now assert the refusal, and that an app without onConnect on the same PgBouncer runs
// as its login (what the first original test asserted).
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../support/database.js'
import { type Bouncer, startBouncer } from './bouncer-kit.js'

const role = uniqueName('probe_reader').replace('-', '_')
let db: TestDatabase
let bouncer: Bouncer
let other: TestApp
beforeAll(async () => {
  db = await createTestDatabase()
  await db.admin.unsafe(`create role ${role}`)
  bouncer = await startBouncer(db.directUrl, { default_pool_size: 2 })
})
afterAll(async () => {
  await other?.app.close()
  await bouncer?.stop()
  await db?.drop([role])
})

const setRole = async (sql: { unsafe: (text: string) => Promise<unknown> }) => {
  await sql.unsafe(`set role ${role}`)
}

async function registered(options: Record<string, unknown>): Promise<unknown> {
  const app = Fastify()
  try {
    return await app.register(pgPoolCore, options as never).then(
      () => 'registered',
      (error: unknown) => error,
    )
  } finally {
    await app.close().catch(() => {})
  }
}

describe('onConnect behind PgBouncer in transaction mode (pool.pgbouncer: true)', () => {
  test('onConnect with pool.pgbouncer: true is refused at register', async () => {
    const outcome = await registered({
      connection: bouncer.via(db.directUrl),
      pool: { max: 1, pgbouncer: true, lazy: true },
      onConnect: setRole,
    })
    expect(outcome).toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringMatching(/onConnect.*pool\.pgbouncer/s),
    })
  })

  test("onConnect with a replica's pool.pgbouncer: true is refused at register", async () => {
    const outcome = await registered({
      connection: db.directUrl,
      pool: { max: 1, lazy: true },
      replicas: [{ connection: bouncer.via(db.directUrl), pool: { pgbouncer: true } }],
      onConnect: setRole,
    })
    expect(outcome).toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringMatching(/onConnect.*replicas\[0\]\.pool\.pgbouncer/s),
    })
  })

  test('held: onConnect without pgbouncer is accepted', async () => {
    expect(await registered({ connection: db.directUrl, pool: { max: 1, lazy: true }, onConnect: setRole })).toBe(
      'registered',
    )
  })

  test('another app on the same PgBouncer runs as its login', async () => {
    const refused = await registered({
      connection: bouncer.via(db.directUrl),
      pool: { max: 1, pgbouncer: true },
      onConnect: setRole,
    })
    expect(refused).toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
    other = await coreApp(bouncer.via(db.directUrl), { max: 1, pgbouncer: true })
    other.app.get('/who', async (request) => (await request.db`select current_user as role, session_user as login`)[0])
    const reply = await other.app.inject('/who')
    expect(reply.statusCode).toBe(200)
    const { role: current, login } = reply.json() as { role: string; login: string }
    expect(current, 'the other app runs as the role of the refused app').toBe(login)
  })
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, urlAs, waitUntil } from '../../support/database.js'

// Held attacks (hostile probing, round two of the operational fixes, 6ab603a: the listener's session
// turns idle_session_timeout off). Core README, LISTEN: "Its session turns `idle_session_timeout`
// off (a role's or database's would close it every period)". The statement names pg_catalog's
// functions: a role whose search_path puts a schema of shadowing functions first (set_config that
// raises, current_setting that answers NULL) changes nothing; notifications sent several periods
// later arrive on the first connection (no reconnection).

let db: TestDatabase
let app: FastifyInstance | undefined
const tag = Math.random().toString(16).slice(2, 8)
const role = `ops_listen_${tag}`
const password = `pw_${tag}`
beforeAll(async () => {
  db = await createTestDatabase()
  await db.admin.unsafe(`create role ${role} login password '${password}'`)
  await db.sql.unsafe(`create schema shadow_${tag} authorization ${role}`)
  await db.sql.unsafe(`
    create function shadow_${tag}.set_config(text, text, boolean) returns text language plpgsql as
      $$ begin raise exception 'shadowed set_config called'; end $$;
    create function shadow_${tag}.current_setting(text, boolean) returns text language sql as
      $$ select null::text $$;
    grant usage on schema shadow_${tag} to public;`)
  await db.admin.unsafe(`alter role ${role} set idle_session_timeout = '400ms'`)
  await db.admin.unsafe(`alter role ${role} set search_path = shadow_${tag}, pg_catalog, public`)
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop([role]))

describe("a role with idle_session_timeout and a search_path that shadows pg_catalog's functions", () => {
  test('the listener stays connected for several periods and hears what is sent', async () => {
    const version = Number((await db.sql<{ v: string }[]>`select current_setting($$server_version_num$$) as v`)[0]?.v)
    expect(version).toBeGreaterThanOrEqual(140000)
    const a = Fastify()
    app = a
    await a.register(pgPoolCore, {
      connection: urlAs(db.url, role, password),
      pool: { max: 1, applicationName: `ops-listen-${tag}` },
    })
    const heard: string[] = []
    await a.db.listen('idle_probe', ({ payload }) => void heard.push(payload))
    a.get('/one', async (request) => (await request.db`select 1 as one`)[0])
    // Control: the role's setting applies to its sessions, a plain one of its own is closed for idleness.
    const plain = postgres(urlAs(db.directUrl, role, password), { max: 1, onnotice: () => {} })
    try {
      const before = (await plain`select pg_backend_pid() as pid`)[0]?.pid
      await sleep(1_500)
      const after = (await plain`select pg_backend_pid() as pid`)[0]?.pid
      expect(after).not.toBe(before)
    } finally {
      await plain.end({ timeout: 1 })
    }
    await db.sql`select pg_notify('idle_probe', 'after three periods')`
    await waitUntil(() => heard.length === 1, 'the notification', 5_000)
    expect(heard).toEqual(['after three periods'])
    expect(a.pgPool.listener()).toMatchObject({ connected: true, reconnections: 0 })
    // The pool's idle connection was closed by the server meanwhile: the next request is served.
    expect((await a.inject('/one')).statusCode).toBe(200)
  })
})

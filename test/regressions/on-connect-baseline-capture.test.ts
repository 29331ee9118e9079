import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing (second round on the reset's check), each failing on 65147d6:
// - onConnect's SET SESSION AUTHORIZATION <unprivileged> was undone by the reset's SET SESSION
//   AUTHORIZATION DEFAULT and never restored: from the second request on, requests ran as the login
//   user (a superuser here). The baseline now records the session user onConnect switched to.
// - The capture of onConnect's settings and role used unqualified operators, resolved through the
//   search_path onConnect left: an app's name <> name or text = text ahead of pg_catalog made new
//   connections forget onConnect's role or settings, or fail every reset.

let db: TestDatabase
let current: TestApp | undefined
let dbName: string
const low = `probe_low_${Math.random().toString(16).slice(2, 8)}`

beforeAll(async () => {
  db = await createTestDatabase()
  dbName = new URL(db.directUrl).pathname.slice(1)
  await db.sql.unsafe(`create role ${low} nosuperuser; create schema app; grant usage on schema app to ${low}`)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop([low])
})

function routes(app: FastifyInstance) {
  app.get('/who', async (request) => {
    const [row] = await request.db<{ pid: number; cu: string; su: string; tz: string }[]>`
      select pg_backend_pid() as pid, current_user::text as cu, session_user::text as su,
        current_setting('TimeZone') as tz`
    return row
  })
}

describe('what onConnect left is restored by every reset', () => {
  test('control: onConnect SET ROLE and SET TimeZone, no shadowing: every request has them', async () => {
    await db.sql.unsafe(`alter database ${dbName} set search_path = app, pg_catalog, public`)
    try {
      current = await coreApp(
        db.url,
        { max: 1 },
        {},
        {
          onConnect: async (sql) => {
            await sql.unsafe(`set role ${low}; set timezone = 'Asia/Tokyo'`)
          },
        },
      )
      routes(current.app)
      const first = (await current.app.inject('/who')).json()
      const second = (await current.app.inject('/who')).json()
      expect(second.pid).toBe(first.pid)
      expect([first.cu, first.tz, second.cu, second.tz]).toEqual([low, 'Asia/Tokyo', low, 'Asia/Tokyo'])
    } finally {
      await db.sql.unsafe(`alter database ${dbName} reset search_path`)
    }
  })

  test('onConnect SET SESSION AUTHORIZATION <unprivileged>: the second request runs as that role too', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe(`set session authorization ${low}`)
        },
      },
    )
    routes(current.app)
    const first = (await current.app.inject('/who')).json()
    const second = (await current.app.inject('/who')).json()
    expect(first.cu).toBe(low)
    expect(second.pid).toBe(first.pid)
    expect({ cu: second.cu, su: second.su }).toEqual({ cu: low, su: low })
  })

  test("db search_path app, pg_catalog: an app's name <> name makes new connections forget onConnect's SET ROLE", async () => {
    await db.sql.unsafe(`alter database ${dbName} set search_path = app, pg_catalog, public`)
    await db.sql.unsafe(`
      create function app.never(name, name) returns bool language sql immutable as 'select false';
      create operator app.<> (leftarg = name, rightarg = name, function = app.never)`)
    try {
      current = await coreApp(
        db.url,
        { max: 1 },
        {},
        {
          onConnect: async (sql) => {
            await sql.unsafe(`set role ${low}`)
          },
        },
      )
      routes(current.app)
      const first = (await current.app.inject('/who')).json()
      const second = (await current.app.inject('/who')).json()
      expect(first.cu).toBe(low)
      expect(second.pid).toBe(first.pid)
      expect(second.cu).toBe(low)
    } finally {
      await db.sql.unsafe(`drop operator if exists app.<> (name, name); drop function if exists app.never(name, name);
        alter database ${dbName} reset search_path`)
    }
  })

  test("db search_path app, pg_catalog: an app's text = text makes new connections forget onConnect's settings", async () => {
    await db.sql.unsafe(`alter database ${dbName} set search_path = app, pg_catalog, public`)
    await db.sql.unsafe(`
      create function app.never_t(text, text) returns bool language sql immutable as 'select false';
      create operator app.= (leftarg = text, rightarg = text, function = app.never_t)`)
    try {
      current = await coreApp(
        db.url,
        { max: 1 },
        {},
        {
          onConnect: async (sql) => {
            await sql.unsafe(`set timezone = 'Asia/Tokyo'`)
          },
        },
      )
      routes(current.app)
      const first = (await current.app.inject('/who')).json()
      const second = (await current.app.inject('/who')).json()
      expect(first.tz).toBe('Asia/Tokyo')
      expect(second.pid).toBe(first.pid)
      expect(second.tz).toBe('Asia/Tokyo')
    } finally {
      await db.sql.unsafe(`drop operator if exists app.= (text, text); drop function if exists app.never_t(text, text);
        alter database ${dbName} reset search_path`)
    }
  })

  test("db search_path app, pg_catalog: an app's text = text that says true makes every reset fail (a backend per request)", async () => {
    await db.sql.unsafe(`alter database ${dbName} set search_path = app, pg_catalog, public`)
    await db.sql.unsafe(`
      create function app.always_t(text, text) returns bool language sql immutable as 'select true';
      create operator app.= (leftarg = text, rightarg = text, function = app.always_t)`)
    try {
      current = await coreApp(
        db.url,
        { max: 1 },
        {},
        {
          onConnect: async (sql) => {
            await sql.unsafe(`set timezone = 'Asia/Tokyo'`)
          },
        },
      )
      routes(current.app)
      const pids = new Set<number>()
      for (let i = 0; i < 5; i++) pids.add((await current.app.inject('/who')).json().pid)
      const warnings = current.logs.filter((l) => (l.level as number) >= 40)
      expect(pids.size).toBe(1)
      expect(warnings).toEqual([])
    } finally {
      await db.sql.unsafe(`drop operator if exists app.= (text, text); drop function if exists app.always_t(text, text);
        alter database ${dbName} reset search_path`)
    }
  })
})

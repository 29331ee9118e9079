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

/** An app whose onConnect runs `setup`, with a route that shows who and where each request is. */
async function appWith(setup: string): Promise<FastifyInstance> {
  current = await coreApp(
    db.url,
    { max: 1 },
    {},
    {
      onConnect: async (sql) => {
        await sql.unsafe(setup)
      },
    },
  )
  current.app.get('/who', async (request) => {
    const [row] = await request.db<{ pid: number; cu: string; su: string; tz: string }[]>`
      select pg_backend_pid() as pid, current_user::text as cu, session_user::text as su,
        current_setting('TimeZone') as tz`
    return row
  })
  return current.app
}

/**
 * Runs `run` with the database's search_path putting schema app ahead of pg_catalog, and, when
 * given, an operator of the app's there: `operator` is (argument type, symbol, what it answers).
 */
async function withAppSearchPath(
  operator: [type: string, symbol: string, answer: boolean] | undefined,
  run: () => Promise<void>,
): Promise<void> {
  await db.sql.unsafe(`alter database ${dbName} set search_path = app, pg_catalog, public`)
  const [type, symbol, answer] = operator ?? []
  if (operator !== undefined) {
    await db.sql.unsafe(`
      create function app.shadow(${type}, ${type}) returns bool language sql immutable as 'select ${answer}';
      create operator app.${symbol} (leftarg = ${type}, rightarg = ${type}, function = app.shadow)`)
  }
  try {
    await run()
  } finally {
    if (operator !== undefined) {
      await db.sql.unsafe(`drop operator app.${symbol} (${type}, ${type}); drop function app.shadow(${type}, ${type})`)
    }
    await db.sql.unsafe(`alter database ${dbName} reset search_path`)
  }
}

async function twoRequests(app: FastifyInstance) {
  const first = (await app.inject('/who')).json()
  const second = (await app.inject('/who')).json()
  expect(second.pid).toBe(first.pid)
  return [first, second]
}

describe('what onConnect left is restored by every reset', () => {
  test('control: onConnect SET ROLE and SET TimeZone, no shadowing: every request has them', async () => {
    await withAppSearchPath(undefined, async () => {
      const [first, second] = await twoRequests(await appWith(`set role ${low}; set timezone = 'Asia/Tokyo'`))
      expect([first.cu, first.tz, second.cu, second.tz]).toEqual([low, 'Asia/Tokyo', low, 'Asia/Tokyo'])
    })
  })

  test('onConnect SET SESSION AUTHORIZATION <unprivileged>: the second request runs as that role too', async () => {
    const [first, second] = await twoRequests(await appWith(`set session authorization ${low}`))
    expect(first.cu).toBe(low)
    expect({ cu: second.cu, su: second.su }).toEqual({ cu: low, su: low })
  })

  test("an app's name <> name ahead of pg_catalog does not make new connections forget onConnect's SET ROLE", async () => {
    await withAppSearchPath(['name', '<>', false], async () => {
      const [first, second] = await twoRequests(await appWith(`set role ${low}`))
      expect([first.cu, second.cu]).toEqual([low, low])
    })
  })

  test("an app's text = text ahead of pg_catalog does not make new connections forget onConnect's settings", async () => {
    await withAppSearchPath(['text', '=', false], async () => {
      const [first, second] = await twoRequests(await appWith(`set timezone = 'Asia/Tokyo'`))
      expect([first.tz, second.tz]).toEqual(['Asia/Tokyo', 'Asia/Tokyo'])
    })
  })

  test("an app's text = text that says true does not make every reset fail (a backend per request)", async () => {
    await withAppSearchPath(['text', '=', true], async () => {
      const app = await appWith(`set timezone = 'Asia/Tokyo'`)
      const pids = new Set<number>()
      for (let i = 0; i < 5; i++) pids.add((await app.inject('/who')).json().pid)
      expect(pids.size).toBe(1)
      expect(current?.logs.filter((line) => (line.level as number) >= 40)).toEqual([])
    })
  })
})

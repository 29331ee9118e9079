import type { FastifyInstance } from 'fastify'
import type postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Hostile probing of the statements onConnect prepares (the reset's baseline): odd names, odd
// session and database settings while they are captured and checked. All held.

let db: TestDatabase
let current: TestApp | undefined
let dbName: string

beforeAll(async () => {
  db = await createTestDatabase()
  dbName = new URL(db.directUrl).pathname.slice(1)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop()
})

async function appWith(onConnect: (sql: postgres.Sql<{}>) => Promise<unknown>, pool = {}) {
  let opened = 0
  current = await coreApp(
    db.url,
    { max: 1, ...pool },
    {},
    {
      onConnect: async (sql) => {
        opened++
        await onConnect(sql)
      },
    },
  )
  const { app } = current
  app.get('/session', async (request) => {
    const [row] = await request.db<{ pid: number; statements: string[] }[]>`
      select pg_backend_pid() as pid,
        coalesce((select array_agg(name order by name) from pg_prepared_statements
          where from_sql and strpos(statement, 'pg_advisory_unlock_all') = 0), '{}') as statements`
    return row
  })
  app.post('/run', async (request) => {
    await request.db.unsafe((request.body as { sql: string }).sql)
    return { ok: true }
  })
  return { app, opened: () => opened }
}

async function session(app: FastifyInstance): Promise<{ pid: number; statements: string[] }> {
  const response = await app.inject('/session')
  expect(response.statusCode, response.body).toBe(200)
  return response.json()
}

const q = (name: string) => `"${name.replaceAll('"', '""')}"`

const odd = [
  "it's",
  'back\\slash',
  'back\\\\two',
  'dq"inside',
  'ünïcödé_名前_🙂',
  'with space\nnewline\ttab',
  'fastify_pg_pool_reset_0123456789ab',
  'x'.repeat(80),
  'é'.repeat(40),
  "E'x'",
  '$$dollar$$',
]

async function expectKeptAcross(app: FastifyInstance, opened: () => number, requests = 6) {
  const first = await session(app)
  for (let i = 0; i < requests; i++) {
    await app.inject({
      method: 'POST',
      url: '/run',
      payload: { sql: "select 1; set timezone = 'America/St_Johns'; set datestyle = 'SQL, DMY'" },
    })
    const next = await session(app)
    expect(next.pid).toBe(first.pid)
    expect(next.statements).toEqual(first.statements)
  }
  expect(opened()).toBe(1)
  expect(current?.logs.filter((line) => (line.level as number) >= 40)).toEqual([])
  return first
}

describe('odd names and settings in onConnect: kept, one connection, no warning', () => {
  test.each(odd)('name %j', async (name) => {
    const { app, opened } = await appWith((sql) => sql.unsafe(`prepare ${q(name)} as select 1`))
    const first = await expectKeptAcross(app, opened)
    expect(first.statements.length).toBe(1)
  })

  test('every odd name at once, with standard_conforming_strings off', async () => {
    const { app, opened } = await appWith(async (sql) => {
      await sql.unsafe('set standard_conforming_strings = off')
      for (const name of odd) await sql.unsafe(`prepare ${q(name)} as select 1`)
    })
    const first = await expectKeptAcross(app, opened)
    expect(first.statements.length).toBe(odd.length)
  })

  // DateStyle ISO, DMY (not SQL) and extra_float_digits 3 (not -15) since round thirteen: settings
  // postgres.js misreads values by are refused after onConnect (UNREADABLE_SETTINGS).
  test('onConnect with ISO, DMY DateStyle, a half-hour time zone, postgres IntervalStyle', async () => {
    const { app, opened } = await appWith(async (sql) => {
      await sql.unsafe(
        "set datestyle = 'ISO, DMY'; set timezone = 'Asia/Kathmandu'; set intervalstyle = 'sql_standard'; set extra_float_digits = 3; prepare a as select 1; prepare b as select 2",
      )
    })
    await expectKeptAcross(app, opened)
  })

  // DateStyle ISO, DMY since round thirteen (a DateStyle that is not ISO is refused at open).
  test('database defaults: standard_conforming_strings off, DateStyle ISO DMY, TimeZone +05:45', async () => {
    await db.sql.unsafe(`alter database ${dbName} set standard_conforming_strings = off`)
    await db.sql.unsafe(`alter database ${dbName} set datestyle = 'ISO, DMY'`)
    await db.sql.unsafe(`alter database ${dbName} set timezone = 'Asia/Kathmandu'`)
    try {
      const { app, opened } = await appWith(async (sql) => {
        for (const name of odd) await sql.unsafe(`prepare ${q(name)} as select 1`)
      })
      const first = await expectKeptAcross(app, opened)
      expect(first.statements.length).toBe(odd.length)
    } finally {
      await db.sql.unsafe(`alter database ${dbName} reset all`)
    }
  })

  test('300 statements', async () => {
    const { app, opened } = await appWith(async (sql) => {
      await sql.unsafe(Array.from({ length: 300 }, (_, i) => `prepare s${i} as select ${i}`).join('; '))
    })
    const first = await expectKeptAcross(app, opened, 3)
    expect(first.statements.length).toBe(300)
  })

  test('prepares then deallocates', async () => {
    const { app, opened } = await appWith(async (sql) => {
      await sql.unsafe('prepare a as select 1; prepare b as select 2')
      await sql.unsafe('deallocate a')
    })
    const first = await expectKeptAcross(app, opened)
    expect(first.statements).toEqual(['b'])
  })

  test('prepares the same name twice over (deallocate + prepare in one message)', async () => {
    const { app, opened } = await appWith(async (sql) => {
      await sql.unsafe('prepare a as select 1; deallocate a; prepare a as select 2')
    })
    await expectKeptAcross(app, opened)
  })
})

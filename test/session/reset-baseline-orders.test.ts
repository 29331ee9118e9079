import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Hostile probing of onConnect's baseline: session authorization and role in either order, a
// request that resets both, settings onConnect made local or rolled back. All held.

let db: TestDatabase
let current: TestApp | undefined
const tag = Math.random().toString(16).slice(2, 8)
const a = `p3h_a_${tag}`
const b = `p3h_b_${tag}`

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create role ${a} nosuperuser; create role ${b} nosuperuser; grant ${b} to ${a}`)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop([a, b])
})

function routes(app: FastifyInstance) {
  app.get('/who', async (request) => {
    const [row] = await request.db<{ pid: number; cu: string; su: string; tz: string; st: string }[]>`
      select pg_backend_pid() as pid, current_user::text as cu, session_user::text as su,
        current_setting('TimeZone') as tz, current_setting('statement_timeout') as st`
    return row
  })
  app.get('/escalate', async (request) => {
    await request.db.unsafe("set session authorization default; set role none; set timezone = 'UTC'")
    return (await request.db`select current_user::text as cu`)[0]
  })
}

describe('held', () => {
  test('onConnect SET SESSION AUTHORIZATION a; SET ROLE b, request resets both: next request is a/b again', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe(`set timezone = 'Asia/Tokyo'; set session authorization ${a}; set role ${b}`)
        },
      },
    )
    routes(current.app)
    const first = (await current.app.inject('/who')).json()
    const esc = (await current.app.inject('/escalate')).json()
    const second = (await current.app.inject('/who')).json()
    expect(esc.cu).toBe('postgres')
    expect(second.pid).toBe(first.pid)
    expect([first.cu, first.su, second.cu, second.su, second.tz]).toEqual([b, a, b, a, 'Asia/Tokyo'])
  })

  test('onConnect SET ROLE b then SET SESSION AUTHORIZATION a: a/a on every request', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe(`set role ${b}; set session authorization ${a}`)
        },
      },
    )
    routes(current.app)
    const first = (await current.app.inject('/who')).json()
    await current.app.inject('/escalate')
    const second = (await current.app.inject('/who')).json()
    expect([first.cu, first.su, second.cu, second.su]).toEqual([a, a, a, a])
  })

  test('onConnect local / rolled-back settings are not made session-wide by the baseline', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe(`begin; set statement_timeout = '7s'; rollback`)
          await sql.unsafe(`begin; select set_config('TimeZone', 'Asia/Tokyo', true); commit`)
        },
      },
    )
    routes(current.app)
    const rows = [(await current.app.inject('/who')).json(), (await current.app.inject('/who')).json()]
    for (const r of rows) expect([r.st, r.tz]).not.toContain('7s')
    for (const r of rows) expect(r.tz).not.toBe('Asia/Tokyo')
  })
})

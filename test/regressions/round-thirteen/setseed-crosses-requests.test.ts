import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

// DEFECT (one request's setseed() chose the next request's random()).
//
// What the user does: a request runs `select setseed(0.5)` (on any route kind that resets its
// session: the default, a route transaction, a begin() block), and the next request on the same
// connection draws `random()` (a sample, a shuffled order, an id of some kind).
// What they saw: the next request's `random()` was the sequence the first one chose: its values
// were known to the first request's author in advance. The session reset (RESET ALL, DISCARD ...)
// does not touch the random seed, and neither does DISCARD ALL.
// What they should see: the next request's random() unrelated to what an earlier holder seeded:
// the reset seeds the generator again from the server's strong random source.
// Failed on d3b6f21: every route kind gave the seeded first value.

let db: TestDatabase
let current: TestApp | undefined
let seeded: number[]

beforeAll(async () => {
  db = await createTestDatabase()
  // What random() gives after setseed(0.5), on a session of its own.
  await db.sql.begin(async (sql) => {
    await sql`select setseed(0.5)`
    const [a] = await sql<{ r: number }[]>`select random() as r`
    const [b] = await sql<{ r: number }[]>`select random() as r`
    seeded = [Number(a?.r), Number(b?.r)]
  })
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db?.drop())

const kinds = {
  default: {},
  transaction: { config: { db: { transaction: true } } },
} as const

describe('setseed() of one request does not choose the next one random()', () => {
  for (const [kind, options] of Object.entries(kinds)) {
    test(`${kind} route, then a plain route on the same connection`, async () => {
      current = await coreApp(db.url, { max: 1 })
      const { app } = current
      app.post('/seed', options, async (request) => {
        const [row] = await request.db<{ pid: number }[]>`select setseed(0.5) is null as x, pg_backend_pid() as pid`
        return row
      })
      app.get('/draw', async (request) => {
        const [row] = await request.db<{ r: number; pid: number }[]>`select random() as r, pg_backend_pid() as pid`
        return row
      })
      const seed = await app.inject({ method: 'POST', url: '/seed' })
      expect(seed.statusCode).toBe(200)
      const draw = await app.inject({ url: '/draw' })
      expect(draw.statusCode).toBe(200)
      // Same connection (max: 1): the reset ran between them.
      expect(draw.json().pid).toBe(seed.json().pid)
      expect(Number(draw.json().r)).not.toBe(seeded[0])
    })
  }

  test('a begin() block, then a plain route on the same connection', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app } = current
    app.post('/seed', async (request) => {
      await request.db.begin(async (sql) => {
        await sql`select setseed(0.5)`
      })
      return { ok: true }
    })
    app.get('/draw', async (request) => {
      const [row] = await request.db<{ r: number }[]>`select random() as r`
      return row
    })
    expect((await app.inject({ method: 'POST', url: '/seed' })).statusCode).toBe(200)
    const draw = await app.inject({ url: '/draw' })
    expect(Number(draw.json().r)).not.toBe(seeded[0])
  })

  test('control: on one session, the seed does choose the sequence', async () => {
    await db.sql.begin(async (sql) => {
      await sql`select setseed(0.5)`
      const [a] = await sql<{ r: number }[]>`select random() as r`
      expect(Number(a?.r)).toBe(seeded[0])
    })
  })
})

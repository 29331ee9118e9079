import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'

// Found by hostile probing (fourth round): an onConnect that left a transaction open (`begin; set
// role low`, never committed) had its work rolled back by the pool's own capture of the baseline,
// which ran after it: with sessionReset 'rollback' or 'never' every request then ran as the login
// superuser, and in the default mode each new connection's first request did (on 33db61c). Such a
// connection is now refused, as one left in a failed transaction already was: no request runs on it.

let db: TestDatabase
let current: TestApp | undefined
const low = `fpp_open_tx_${Math.random().toString(16).slice(2, 8)}`

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create role ${low} nosuperuser`)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop([low])
})

const leavesOpen = async (sql: { unsafe: (text: string) => PromiseLike<unknown> }) => {
  await sql.unsafe(`begin; set role ${low}; set statement_timeout = '12345'`)
}

describe('onConnect returns inside a transaction block', () => {
  for (const sessionReset of ['always', 'rollback', 'never'] as const) {
    test(`${sessionReset}: register fails with FST_PG_POOL_CONNECT_FAILED, naming the cause in the log only`, async () => {
      const failed = await coreApp(db.url, { max: 1, sessionReset }, {}, { onConnect: leavesOpen }).then(
        () => undefined,
        (error: unknown) => error as Error & { code?: string; cause?: { code?: string; message?: string } },
      )
      expect(failed?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
      expect(failed?.cause?.code).toBe('ON_CONNECT_OPEN_TRANSACTION')
      expect(failed?.cause?.message).toMatch(/onConnect left a transaction open/)
    })
  }

  test('lazy: every request is refused with a retryable 503; none runs, as anyone', async () => {
    current = await coreApp(db.url, { max: 3, lazy: true }, {}, { onConnect: leavesOpen })
    const ran: string[] = []
    current.app.get('/who', async (request) => {
      const [row] = await request.db<{ cu: string }[]>`select current_user::text as cu`
      ran.push(row?.cu ?? '')
      return row
    })
    const replies = await Promise.all([1, 2, 3].map(() => (current as TestApp).app.inject('/who')))
    for (const reply of replies) {
      expect(reply.statusCode).toBe(503)
      expect(reply.json().code).toBe('FST_PG_POOL_CONNECT_FAILED')
      expect(reply.headers['retry-after']).toBeDefined()
    }
    expect(ran).toEqual([])
    // The refused openings left no backend behind.
    const name = current.applicationName
    expect(await waitFor(async () => (await db.countConnections(name)) === 0)).toBe(true)
  })

  test('an onConnect that commits what it began is fine: its role is the baseline', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe(`begin; set role ${low}; commit`)
        },
      },
    )
    current.app.get('/who', async (request) => (await request.db<{ cu: string }[]>`select current_user::text as cu`)[0])
    for (let i = 0; i < 3; i++) expect((await current.app.inject('/who')).json()).toEqual({ cu: low })
  })
})

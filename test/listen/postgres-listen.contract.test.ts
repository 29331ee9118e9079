import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../support/database.js'

// What packages/core/src/listener.ts assumes of postgres.js 3.4.9, one test per assumption: an
// upgrade that changes one fails here, by name, rather than a listener in production.

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db.drop()
})

describe('postgres.js LISTEN contract', () => {
  test('the onnotify option receives (channel, payload) of every notification on the client’s connection', async () => {
    const received: [string, string][] = []
    const sql = postgres(db.directUrl, {
      max: 1,
      onnotice: () => {},
      onnotify: (channel: string, payload: string) => void received.push([channel, payload]),
    } as postgres.Options<{}>)
    try {
      await sql.unsafe('LISTEN "a"; LISTEN "b ""c"""')
      await db.sql`select pg_notify('a', 'one'), pg_notify('b "c"', 'two')`
      await waitUntil(() => received.length === 2, 'both notifications')
      expect(received).toEqual([
        ['a', 'one'],
        ['b "c"', 'two'],
      ])
    } finally {
      await sql.end({ timeout: 0 })
    }
  })

  test('onclose fires when the backend is terminated; the next statement opens a new connection', async () => {
    const name = uniqueName('contract')
    let closes = 0
    const sql = postgres(db.directUrl, {
      max: 1,
      onnotice: () => {},
      connection: { application_name: name },
      onclose: () => {
        closes++
      },
    })
    try {
      const [before] = await sql<{ pid: number }[]>`select pg_backend_pid() as pid`
      expect(await db.terminate(name)).toBe(1)
      await waitUntil(() => closes === 1, 'onclose')
      const [after] = await sql<{ pid: number }[]>`select pg_backend_pid() as pid`
      expect(after?.pid).not.toBe(before?.pid)
    } finally {
      await sql.end({ timeout: 0 })
    }
  })

  test('sql.listen re-subscribes after a terminated backend, but hides the loss: its inner client’s onclose is its own', async () => {
    const name = uniqueName('contract')
    let closes = 0
    let listens = 0
    const received: string[] = []
    const sql = postgres(db.directUrl, {
      max: 1,
      onnotice: () => {},
      connection: { application_name: name },
      onclose: () => {
        closes++
      },
    })
    try {
      await sql.listen(
        'c',
        (payload) => void received.push(payload),
        () => {
          listens++
        },
      )
      expect(await db.terminate(name)).toBe(1)
      await waitUntil(() => listens === 2, 're-subscribed')
      await db.sql`select pg_notify('c', 'after')`
      await waitUntil(() => received.length === 1, 'a notification after the loss')
      // Why listener.ts keeps its own client: nothing outside sql.listen learns of the loss.
      expect(closes).toBe(0)
    } finally {
      await sql.end({ timeout: 0 })
    }
  })
})

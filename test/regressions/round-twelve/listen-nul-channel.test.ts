// DEFECT (low): app.db.listen() with a channel name holding a NUL character passes the 1..63-byte
// check (listener.ts:173) and is sent in `LISTEN "a<NUL>b"`; the server cuts the message's text at
// the NUL and refuses it (syntax error), and the caller gets FST_PG_POOL_CONNECT_FAILED, which
// says the database could not be reached, for what is a bad argument. The other channels'
// connection survives (checked below). Should be: FST_PG_POOL_INVALID_OPTION, like an empty or
// 64-byte name. Fix: refuse '\u0000' in listen(channel) with the other checks (listener.ts:173),
// and only map connection errors to CONNECT_FAILED (connectFailed, listener.ts:100).

import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitUntil } from '../../support/database.js'

let db: TestDatabase
let app: FastifyInstance | undefined

beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(async () => {
  await db.drop()
})

describe('a channel name holding a NUL character', () => {
  test("is refused (coded) without touching the other channels' LISTEN connection", async () => {
    const current = await coreApp(db.directUrl, { pgbouncer: false, max: 1 })
    app = current.app
    const received: string[] = []
    await app.db.listen('orders', (n) => void received.push(n.payload))
    const outcome = await app.db
      .listen('a\u0000b', () => {})
      .then(
        () => 'listened',
        (error: { code?: string }) => error.code,
      )
    // Give a lost connection the time to show.
    await sleep(300)
    const stats = app.pgPool.listener()
    await db.sql`select pg_notify('orders', 'after')`
    await waitUntil(() => received.includes('after'), 'the notification on orders', 10_000)
    expect({ outcome, reconnections: stats.reconnections, connected: stats.connected }).toEqual({
      outcome: 'FST_PG_POOL_INVALID_OPTION',
      reconnections: 0,
      connected: true,
    })
  })
})

import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../support/database.js'

// Found by hostile probing (round ten, server-side actions): an `idle_session_timeout` of the
// database or role (PostgreSQL 14 and later) closed the LISTEN connection every period (it only
// waits, and a notification does not restart the server's idle timer): the listener reconnected
// each time and lost what was sent meanwhile (10 reconnections, about 5 of 100 notifications lost
// in 3 s). Failed before the fix on PostgreSQL 15 and 18; the listener's session now turns the
// setting off with its LISTEN.

let db: TestDatabase
let current: TestApp | undefined
let dbName: string
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  dbName = new URL(db.directUrl).pathname.slice(1)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
  await db.admin.unsafe(`alter database ${dbName} reset all`)
})
afterAll(() => db.drop())

test('idle_session_timeout on the database: the listener hears every notification and never reconnects', async () => {
  await db.admin.unsafe(`alter database ${dbName} set idle_session_timeout = '300ms'`)
  current = await coreApp(db.url, { max: 2 })
  const { app } = current
  await app.ready()
  const got: string[] = []
  await app.db.listen('orders', ({ payload }) => void got.push(payload))
  const sent: string[] = []
  for (let i = 0; i < 100; i++) {
    await db.sql`select pg_notify('orders', ${String(i)})`
    sent.push(String(i))
    await sleep(30)
  }
  await waitFor(() => got.length === sent.length, 2_000)
  expect({ received: got.length, reconnections: app.pgPool.listener().reconnections }).toEqual({
    received: sent.length,
    reconnections: 0,
  })
})

import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../support/database.js'

// Found by hostile probing (failed before the fix): app.close() past closeTimeout while pipelined requests share a connection.

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db.admin`select pg_terminate_backend(pid) from pg_stat_activity where query like '%pg_sleep(60)%' and pid <> pg_backend_pid()`
  await db.drop()
})

const pipelined = { config: { db: { pipeline: true } } }

describe('app.close() past closeTimeout', () => {
  test.each([
    ['exclusive', {}],
    ['pipelined', pipelined],
  ])('a %s request running a long statement: no backend keeps running it after close', async (_kind, options) => {
    const { app, applicationName } = await coreApp(db.url, { max: 1, closeTimeout: 300, statementTimeout: 120_000 })
    app.get('/long', options, async (request) => request.db`select pg_sleep(60)`)
    const long = app.inject('/long')
    await waitUntil(
      async () => (await db.running(applicationName, '%pg_sleep(60)%')) === 1,
      'the statement runs',
      5_000,
    )
    await app.close()
    const res = await long
    expect(res.statusCode).toBe(503)
    // The pool cancels what still runs before it cuts the connection (as it does for a lease of
    // its own): the server would otherwise run the statement to its end for nobody.
    const gone = await waitFor(async () => (await db.running(applicationName, '%pg_sleep(60)%')) === 0, 5_000)
    expect({ backendStillRunning: !gone }).toEqual({ backendStillRunning: false })
  })
})

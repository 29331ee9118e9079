import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing (round ten, server-side actions): FST_PG_POOL_QUERY_TIMEOUT always named
// the pool's own statementTimeout, whatever limit the server applied: "within 0 ms" with
// `statementTimeout: 0` under a database's statement_timeout, "within 30000 ms" for a request's own
// `SET statement_timeout = '100ms'`. The first test failed before the fix (PostgreSQL 15 and 18).

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

test("the database's statement_timeout with pool.statementTimeout 0: the message does not say 0 ms", async () => {
  await db.admin.unsafe(`alter database ${dbName} set statement_timeout = '200ms'`)
  current = await coreApp(db.url, { max: 1, statementTimeout: 0 })
  const { app } = current
  app.get('/slow', async (request) => (await request.db`select pg_sleep(1)`)[0])
  const res = await app.inject('/slow')
  expect(res.statusCode, res.body).toBe(503)
  expect(res.json().code).toBe('FST_PG_POOL_QUERY_TIMEOUT')
  expect(res.json().message).toBe("The database did not answer within the server's statement_timeout")
})

test("a request's own statement_timeout: named as the server's, not the pool's 30000 ms", async () => {
  current = await coreApp(db.url, { max: 1 })
  const { app } = current
  app.get('/own', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`set local statement_timeout = '100ms'`
    return (await request.db`select pg_sleep(1)`)[0]
  })
  const res = await app.inject('/own')
  expect(res.statusCode, res.body).toBe(503)
  expect(res.json()).toMatchObject({
    code: 'FST_PG_POOL_QUERY_TIMEOUT',
    message: "The database did not answer within the server's statement_timeout",
  })
})

import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase } from '../support/database.js'
import { listen } from '../support/http.js'

// Found by a seeded chaos storm (round ten of hostile probing), reduced: a route transaction whose
// handler threw (a 409) while its ROLLBACK waited for a statement still running, and whose
// handlerTimeout fired meanwhile, answered a hybrid: the 409 status with Fastify's timeout body.
// Fastify's timeout answer went on reply.raw (its error handler had run), which the reply gate
// held and preferred to the reply decided first. A raw write after the reply was decided is now a
// second reply, dropped as Fastify drops a second send. Failed before the fix.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

test("handlerTimeout while a thrown error's ROLLBACK waits: the client gets the handler's error, not a timeout body under its status", async () => {
  current = await coreApp(db.url, { max: 2 })
  current.app.get('/r', { handlerTimeout: 150, config: { db: { transaction: true } } }, async (request) => {
    await request.db`select 1`
    void request.db`select pg_sleep(0.5)`.catch(() => {})
    throw Object.assign(new Error('the item is taken'), { statusCode: 409, code: 'ITEM_TAKEN' })
  })
  const base = await listen(current.app)
  const res = await fetch(`${base}/r`)
  const body = (await res.json()) as { code: string; message: string }
  await sleep(100)
  expect({ status: res.status, code: body.code, message: body.message }).toEqual({
    status: 409,
    code: 'ITEM_TAKEN',
    message: 'the item is taken',
  })
})

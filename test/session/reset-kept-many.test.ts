import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

let db: TestDatabase
let current: TestApp | undefined

beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop()
})

// A thousand statements onConnect prepared: each kept, a request's own still caught. The check
// once tested every statement against an OR per kept one (quadratic: 70 ms a reset for 1000 on
// a 2-core machine); its keys are now one array (session-reset.test.ts pins its shape). No timing
// is asserted here: correctness only, at a size where the quadratic form was slow.
test("1000 kept statements: one backend keeps serving, a request's PREPARE is caught", async () => {
  const n = 1000
  current = await coreApp(
    db.url,
    { max: 1 },
    {},
    {
      onConnect: async (sql) => {
        await sql.unsafe(Array.from({ length: n }, (_, i) => `prepare s${i} as select ${i}`).join('; '))
      },
    },
  )
  const { app } = current
  app.get(
    '/pid',
    async (request) =>
      (
        await request.db`select pg_backend_pid() as pid,
    (select count(*)::int from pg_prepared_statements where from_sql and left(name, 1) = 's') as kept`
      )[0],
  )
  app.post('/prepare', async (request) => {
    await request.db.unsafe('prepare leaked as select 1')
    return 'ok'
  })
  const first = (await app.inject('/pid')).json()
  expect(first.kept).toBe(n)
  for (let i = 0; i < 5; i++) expect((await app.inject('/pid')).json()).toEqual(first)
  await app.inject({ method: 'POST', url: '/prepare' })
  const after = (await app.inject('/pid')).json()
  expect(after.kept).toBe(n)
  expect(after.pid).not.toBe(first.pid)
  expect(current.logs.filter((line) => (line.level as number) >= 50)).toEqual([])
})

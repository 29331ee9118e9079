import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

test('smoke', async () => {
  const app = Fastify()
  const applicationName = uniqueName()
  await app.register(pgPoolCore, { connection: db.url, pool: { max: 2, applicationName } })
  app.get('/', async (request) => {
    const [row] = await request.db`select 1 + ${1}::int as two`
    return row
  })
  app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`create table if not exists t (x int)`
    await request.db`insert into t values (1)`
    return { ok: true }
  })
  const res = await app.inject('/')
  expect(res.json()).toEqual({ two: 2 })
  expect((await app.inject({ method: 'POST', url: '/tx' })).statusCode).toBe(200)
  expect(await db.sql`select * from t`).toHaveLength(1)
  expect(await app.db`select 2 as x`).toEqual([{ x: 2 }])
  expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
  expect(await db.countConnections(applicationName)).toBe(1)
  await app.close()
  expect(await db.countConnections(applicationName)).toBe(0)
})

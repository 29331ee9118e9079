import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

// Found while fixing the capture's transforms (fifth round): the pool's own reads by column name
// broke under an app's postgres.js column transform in the connection options. With
// postgres.camel (the common one) app.pgPool.budget() read max_connections as 0; with pascal the
// backend pid and the array types were lost too. They are read by position now.

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

describe("the pool's own reads under an app's column transform", () => {
  for (const [name, transform] of [
    ['camel', postgres.camel],
    ['pascal', postgres.pascal],
  ] as const) {
    test(`${name}: the connection budget is the server's, requests are served with the app's transform`, async () => {
      const parsed = new URL(db.url)
      app = Fastify()
      await app.register(pgPoolCore, {
        connection: {
          host: parsed.hostname,
          port: Number(parsed.port),
          database: parsed.pathname.slice(1),
          user: decodeURIComponent(parsed.username),
          password: decodeURIComponent(parsed.password),
          transform,
        } as never,
        pool: { max: 2, applicationName: uniqueName() },
      })
      app.get('/row', async (request) => (await request.db`select 1 as some_value, array[1, 2] as some_list`)[0])
      await app.ready()
      const [{ max_connections: expected } = { max_connections: -1 }] = await db.sql<{ max_connections: number }[]>`
        select current_setting('max_connections')::int as max_connections`
      expect(app.pgPool.budget()?.maxConnections).toBe(expected)
      const row = (await app.inject('/row')).json()
      // The app's transform still applies to its own statements.
      expect(row).toEqual(name === 'camel' ? { someValue: 1, someList: [1, 2] } : { SomeValue: 1, SomeList: [1, 2] })
    })
  }
})

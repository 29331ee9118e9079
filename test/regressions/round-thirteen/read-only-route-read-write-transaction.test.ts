// DEFECT (probe-options, low). What the user does: declares a route with contradictory config.db
// keys, `{ readOnly: true, transaction: { readOnly: false } }` (a read route that asks for a
// read-write transaction: say a shared `transaction` preset spread into a read route's config).
// What they see: the route is declared and the app starts; every request to it then fails with
// 500 (code 25006, "The database could not run the request (read_only_sql_transaction)") as soon
// as it writes, and reads run in a transaction that said READ WRITE. What they should see:
// FST_PG_POOL_INVALID_OPTION when the route is declared, naming config.db (as `pipeline` with
// `transaction` is refused: "a pipelined route shares its connection and cannot be a
// transaction"). Cause: packages/core/src/route-settings.ts #read checks each key alone and
// pipeline+transaction together, not readOnly with transaction.readOnly === false. Suggested fix:
// refuse `readOnly: true` with `transaction.readOnly: false` at route declaration.
// Failed on a718e61: expected 'declared' to match object { code: 'FST_PG_POOL_INVALID_OPTION', … }.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table items (id serial primary key, v text)`
})
afterAll(() => db?.drop())

test('readOnly with a read-write route transaction is refused at declaration', async () => {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection: db.directUrl, pool: { max: 1 } })
    let declared: unknown = 'declared'
    try {
      app.post(
        '/report',
        { config: { db: { readOnly: true, transaction: { readOnly: false } } } },
        async (request) => request.db`insert into items (v) values ('x') returning id`,
      )
      await app.ready()
    } catch (error) {
      declared = error
    }
    if (declared === 'declared') {
      const response = await app.inject({ method: 'POST', url: '/report' })
      // What the accepted route answers: 500, 25006.
      expect({ status: response.statusCode, code: response.json().code }).toEqual({ status: 500, code: '25006' })
    }
    // Fails: 'declared'.
    expect(declared).toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining('config.db'),
    })
  } finally {
    await app.close()
  }
})

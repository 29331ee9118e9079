import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase } from '../support/database.js'

// Found by hostile probing (failed on 4565a5b): the session reset opened its transaction with a
// bare BEGIN, which takes the defaults the holder left on the session. After a holder ran
// `SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE`
// the reset's first snapshot waited for a safe one (wait_event SafeSnapshot): the next request
// hung for as long as any unrelated serializable transaction that had written stayed open.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (note text)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

describe("the session reset's transaction ignores the defaults a holder left", () => {
  test.each([
    [
      'SET SESSION CHARACTERISTICS',
      'set session characteristics as transaction isolation level serializable, read only, deferrable',
    ],
    [
      'set_config',
      "select set_config('default_transaction_isolation', 'serializable', false), set_config('default_transaction_read_only', 'on', false), set_config('default_transaction_deferrable', 'on', false)",
    ],
  ])(
    '%s (serializable, read only, deferrable): the next request is answered while a serializable writer stays open',
    async (_, statement) => {
      current = await coreApp(db.url, { max: 1 })
      const { app } = current
      app.post('/a', async (request) => {
        await request.db.unsafe(statement)
        return { ok: true }
      })
      app.get('/b', async (request) => {
        const [row] = await request.db<{ isolation: string; readOnly: string }[]>`
        select current_setting('transaction_isolation') as isolation,
               current_setting('transaction_read_only') as "readOnly"`
        return row
      })
      // An unrelated serializable transaction that wrote, open for the whole test: a deferrable
      // read-only snapshot waits until it ends.
      const other = postgres(db.url, { max: 1, onnotice: () => {} })
      const writer = await other.reserve()
      try {
        await writer`begin isolation level serializable`
        await writer`insert into ledger values ('writer')`
        expect((await app.inject({ method: 'POST', url: '/a' })).statusCode).toBe(200)
        const b = app.inject('/b')
        // Generous: the reset takes milliseconds; before the fix it never ended while the writer was open.
        const answer = await Promise.race([b, sleep(10_000).then(() => undefined)])
        expect(answer?.statusCode, 'the next request hung in the session reset').toBe(200)
        expect(answer?.json()).toEqual({ isolation: 'read committed', readOnly: 'off' })
      } finally {
        await writer`rollback`
        writer.release()
        await other.end({ timeout: 1 })
      }
    },
  )
})

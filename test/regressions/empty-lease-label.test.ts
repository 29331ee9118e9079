import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing (fourth round), failing on 33db61c: app.db.lease() released without a
// statement left its leaseApplicationName label on the connection for the next holder.

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

describe('app.db.lease() labelled, released without a statement', () => {
  test("the job's label must not stay on the connection", async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      { leaseApplicationName: (r, route) => (r ? undefined : `job ${route}`) },
    )
    const { app } = current
    app.get('/state', async (request) => (await request.db`select current_setting('application_name') as app`)[0])
    await app.inject('/state')
    const lease = await app.db.lease()
    await lease.release()
    const r = await app.inject('/state')
    expect(r.json().app).toBe(current.applicationName)
  })
})

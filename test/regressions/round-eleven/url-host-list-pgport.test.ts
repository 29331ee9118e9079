import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'
import { outcome, parts, restoreEnv } from './host-forms-kit.js'

// A URL host list whose entries name no port (`postgres://u@a,b/db`) with PGPORT set. postgres.js
// (and libpq) use PGPORT for such entries, and so does the pool for the options form
// (`host: ['a', 'b']`, hostList in options.ts reads env.PGPORT). The URL branch of resolveConnection
// (options.ts ~553-566) defaults each entry to 5432, and the primary's failover path
// (connection-factory.ts:97/220) opens each host with those explicit ports: register fails
// FST_PG_POOL_CONNECT_FAILED (or reaches whatever server listens on 5432). NB: on a server that
// itself listens on 5432 (DATABASE_URL=...:5432) the test cannot tell and passes.
let db: TestDatabase
const saved = { ...process.env }
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})
afterEach(() => restoreEnv(saved))

test('URL host list without ports + PGPORT connects to PGPORT, and target says so', async () => {
  const { host, port, rest } = parts(db)
  process.env.PGPORT = String(port)
  const multi = db.directUrl.replace(`${host}:${port}`, `${host},${host}`)
  const r = await outcome(multi)
  expect(r).toMatchObject({ status: 200, serverPort: port })
  expect(r.target).toBe(`${host}:${port},${host}:${port}/${rest.database}`)
})

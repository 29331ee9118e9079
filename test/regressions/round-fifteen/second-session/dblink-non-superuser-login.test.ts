// What the user does: the app logs in as an ordinary (non-superuser) role, as production apps do,
// in a database that has the dblink extension installed the usual way (`create extension dblink`,
// in public, EXECUTE left to PUBLIC). Nothing else special: default sessionReset.
// What they should get: the app starts and answers, its connections reset and reused between
// requests; dblink connections a request left open are closed by the reset (README).
// What they got: the pool's dblink look-up at connection open (DBLINK_SQL) evaluates
// to_regprocedure('<schema>.dblink_get_connections()') for every schema of the database, the
// filter pushed down to the scan of pg_namespace, and fails with "permission denied for schema
// pg_toast": no connection ever opens. The app does not even start (the warm-up fails with
// "Could not connect to the database"); with warm-up off, every request is a 503.
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName, urlAs, waitFor } from '../../../support/database.js'

let db: TestDatabase
let current: TestApp | undefined
const login = `dbl_app${uniqueName('').slice(1).replace(/-/g, '')}`
const password = 'dblink-pw'

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create extension dblink;
    create role ${login} login password '${password}' nosuperuser`)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop([login]))

test('an ordinary login in a database with dblink starts, answers and keeps its connection', async () => {
  current = await coreApp(urlAs(db.directUrl, login, password), { max: 1, pgbouncer: false })
  const { app, applicationName } = current
  app.get('/one', async (request) => {
    const [row] = await request.db<{ pid: number; names: string[] | null }[]>`
      select pg_backend_pid() as pid, dblink_get_connections() as names`
    return row
  })
  const pids = new Set<number>()
  for (let i = 0; i < 3; i++) {
    const response = await app.inject('/one')
    expect(response.statusCode, response.body).toBe(200)
    expect(response.json().names).toBeNull()
    pids.add(response.json().pid)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  }
  expect(pids.size).toBe(1)
  expect(await db.countConnections(applicationName)).toBe(1)
})

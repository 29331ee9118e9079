// What the user does: the database has dblink installed in a schema of its own (`create extension
// dblink schema ext`, as many DBAs and hosted platforms do) that the app's login was never given
// USAGE on (EXECUTE on dblink's functions is PUBLIC, as the extension installs them); the app
// does not use dblink at all. Or its login is NOINHERIT (an authenticator role) and onConnect
// switches to a role that may run dblink's functions, while the login itself may not.
// What they should get: the app works as before the release; at most, leftover named dblink
// connections are not closed (README: "where ... the login may run dblink_get_connections and
// dblink_disconnect").
// What they got: the pool's look-up of dblink at connection open fails ("permission denied for
// schema ...": to_regprocedure needs USAGE on the schema it looks in, has_function_privilege
// never asks for it): no connection ever opens, the app does not start. And it asks as the role
// onConnect left, not the login the reset's check runs as (after SET SESSION AUTHORIZATION
// DEFAULT): every reset would then fail ("permission denied for function dblink_get_connections"),
// each request's connection retired and a new one opened for the next.
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName, urlAs, waitFor } from '../../../support/database.js'

let db: TestDatabase
let current: TestApp | undefined
const suffix = uniqueName('').slice(1).replace(/-/g, '')
const login = `dbl_login${suffix}`
const worker = `dbl_worker${suffix}`
const password = 'dblink-pw'

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create schema ext; create extension dblink schema ext;
    create role ${worker} nosuperuser;
    create role ${login} login password '${password}' nosuperuser noinherit; grant ${worker} to ${login};
    grant usage on schema ext to ${worker}`)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop([login, worker]))

test('a login without USAGE on the schema dblink is in still opens connections', async () => {
  // The login may not use schema ext (only the worker may), and reaches it in no way.
  current = await coreApp(urlAs(db.directUrl, login, password), { max: 1, pgbouncer: false })
  const { app } = current
  app.get('/one', async (request) => {
    const [row] = await request.db<{ n: number }[]>`select 1::int as n`
    return row
  })
  const first = await app.inject('/one')
  expect(first.statusCode, first.body).toBe(200)
  expect(first.json()).toEqual({ n: 1 })
})

test('onConnect switching to a role that may run dblink does not make every reset fail', async () => {
  // Now the login may use the schema, but only the worker may run dblink's functions.
  await db.sql.unsafe(`grant usage on schema ext to ${login};
    revoke execute on all functions in schema ext from public;
    grant execute on all functions in schema ext to ${worker}`)
  current = await coreApp(
    urlAs(db.directUrl, login, password),
    { max: 1, pgbouncer: false },
    {},
    {
      onConnect: async (sql) => {
        await sql.unsafe(`set role ${worker}`)
      },
    },
  )
  const { app, applicationName } = current
  app.get('/one', async (request) => {
    const [row] = await request.db<{ n: number; pid: number }[]>`select 1::int as n, pg_backend_pid() as pid`
    return row
  })
  const pids = new Set<number>()
  for (let i = 0; i < 4; i++) {
    const response = await app.inject('/one')
    expect(response.statusCode, response.body).toBe(200)
    pids.add(response.json().pid)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  }
  // One connection, reset between the requests and kept: the same backend served all four.
  expect(pids.size).toBe(1)
  expect(await db.countConnections(applicationName)).toBe(1)
  expect(current.logs.filter((line) => /reset/i.test(String(line.msg)) && Number(line.level) >= 40)).toEqual([])
})

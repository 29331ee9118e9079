// What the user does: a route starts a remote statement asynchronously on a named dblink
// connection (`dblink_send_query('remote', 'update ...')`, the documented way to run remote work
// in parallel) and the request fails before it reads the result with `dblink_get_result`.
// What they should get: what the README says of the session reset: "every named dblink
// connection a request left open [is closed]: its remote session ends, and a remote transaction it
// left open is rolled back".
// What they got: the reset's dblink_disconnect only closes the socket: a backend busy with a
// statement does not read it, so the remote session goes on running the statement (holding its
// locks) until it ends, and an autocommit write started by the failed request commits then.
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../../../support/database.js'
import { dblinkConninfo } from '../dblink-kit.js'

let db: TestDatabase
let current: TestApp | undefined
let conninfo = ''

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create extension dblink;
    create table account (id int primary key, balance int);
    insert into account values (1, 100)`)
  conninfo = dblinkConninfo(db, 'second_session_remote')
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
  await db.admin`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'second_session_remote'`
})
afterAll(() => db.drop())

test('a remote statement a failed request left running ends with the reset, its write undone', async () => {
  current = await coreApp(db.directUrl, { max: 1, pgbouncer: false })
  const { app } = current
  app.post('/work', async (request) => {
    await request.db`select dblink_connect('remote', ${conninfo})`
    // The remote write waits 3 s before it updates (pg_sleep first), autocommit.
    await request.db`select dblink_send_query('remote',
      'update account set balance = balance - 1 where id = 1 and pg_sleep(3) is not null')`
    await request.db`select 1/0`
    return { ok: true }
  })
  app.get('/one', async (request) => (await request.db<{ one: number }[]>`select 1::int as one`)[0])

  const failed = await app.inject({ method: 'POST', url: '/work' })
  expect(failed.statusCode).toBeGreaterThanOrEqual(400)
  // The next request on the connection: the reset ran before it.
  expect((await app.inject('/one')).statusCode).toBe(200)
  const remote = async () =>
    (
      await db.sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity where application_name = 'second_session_remote'`
    )[0]?.n
  // Its remote session ends (README): not still running the statement for seconds.
  expect(await waitFor(async () => (await remote()) === 0, 1_500)).toBe(true)
  await sleep(3_000)
  const [account] = await db.sql<{ balance: number }[]>`select balance from account where id = 1`
  expect(account?.balance).toBe(100)
})

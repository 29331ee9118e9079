// What the user does: a route opens a named dblink connection (`dblink_connect('remote', ...)`),
// works through it and closes it with dblink_disconnect; one request fails in between (its remote
// statement errors), so its handler never reaches the disconnect. With the default session reset.
// What they should get: the next request on that pool connection starts clean, as the README
// promises ("nothing of one request reaches the next"): its own dblink_connect('remote') works,
// and the failed request's remote session (an open remote transaction holding a row lock) is gone.
// What they got: the named connection survived the reset (RESET ALL, DISCARD TEMP... do not close
// it), so every later request of that route on the connection failed with "duplicate
// connection name", and the remote transaction stayed idle in transaction holding its lock; a
// request of another route could reach the first request's remote session by its name.
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../../../support/database.js'
import { dblinkConninfo } from '../dblink-kit.js'

let db: TestDatabase
let current: TestApp | undefined
let conninfo = ''

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create extension if not exists dblink;
    create table account (id int primary key, balance int);
    insert into account values (1, 100)`)
  conninfo = dblinkConninfo(db, 'probe_session_remote')
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

test('a dblink connection a failed request left open does not reach the next request', async () => {
  current = await coreApp(db.url, { max: 1 })
  const { app } = current
  app.post('/transfer', async (request) => {
    const fail = (request.query as { fail?: string }).fail === '1'
    await request.db`select dblink_connect('remote', ${conninfo})`
    await request.db`select dblink_exec('remote', 'begin; update account set balance = balance - 1 where id = 1')`
    if (fail) await request.db`select dblink_exec('remote', 'select 1/0')`
    await request.db`select dblink_exec('remote', 'commit')`
    await request.db`select dblink_disconnect('remote')`
    return { ok: true }
  })
  app.get('/peek', async (request) => {
    const [row] = await request.db<{ names: string[] | null }[]>`select dblink_get_connections() as names`
    return { names: row?.names ?? null }
  })

  const failed = await app.inject({ method: 'POST', url: '/transfer?fail=1' })
  expect(failed.statusCode).toBeGreaterThanOrEqual(400)
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)

  // Another route sees no connection of the failed request's.
  const peek = await app.inject('/peek')
  expect(peek.statusCode, peek.body).toBe(200)
  expect(peek.json()).toEqual({ names: null })

  // The failed request's remote session is gone: no transaction of it is left holding the row.
  expect(
    await waitFor(async () => {
      const [row] = await db.sql<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity where application_name = 'probe_session_remote'`
      return row?.n === 0
    }, 3_000),
  ).toBe(true)

  // The same route works again on the same pool.
  const again = await app.inject({ method: 'POST', url: '/transfer' })
  expect(again.statusCode, again.body).toBe(200)
  const [account] = await db.sql<{ balance: number }[]>`select balance from account where id = 1`
  expect(account?.balance).toBe(99)
})

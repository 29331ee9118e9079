// Held (guards 44e0683). What the user does: dblink is installed in a schema whose name needs
// quoting (`create extension dblink schema "Remote Links"`), not on the search_path; a request
// leaves a named dblink connection open. Later the DBA drops the extension while the app's
// connections are open, or moves it to another schema.
// What they should get: the next request does not see the leftover connection (the reset closes
// it); after the extension is dropped or moved, requests keep answering 200 (a connection whose
// prepared reset check named the old functions is retired at its next reset, and the request
// behind it is sent again on a new connection), and the pool settles on working connections.
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../../../support/database.js'
import { dblinkConninfo } from '../dblink-kit.js'

let db: TestDatabase
let current: TestApp | undefined
let conninfo = ''

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create schema "Remote Links"; create extension dblink schema "Remote Links"`)
  conninfo = dblinkConninfo(db)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

test('a quoted schema: the leftover connection is closed; a dropped, then moved extension does not break requests', async () => {
  current = await coreApp(db.directUrl, { max: 2, pgbouncer: false })
  const { app } = current
  app.post('/leave', async (request) => {
    await request.db`select "Remote Links".dblink_connect('left', ${conninfo})`
    return { ok: true }
  })
  app.get('/peek', async (request) => {
    const [row] = await request.db<{ names: string[] | null }[]>`
      select case when to_regprocedure('"Remote Links".dblink_get_connections()') is null then null
        else "Remote Links".dblink_get_connections() end as names`
    return { names: row?.names ?? null }
  })
  app.get('/one', async (request) => (await request.db<{ one: number }[]>`select 1::int as one`)[0])

  // Both pool connections get a leftover, then are peeked at.
  const leave = await Promise.all([
    app.inject({ method: 'POST', url: '/leave' }),
    app.inject({ method: 'POST', url: '/leave' }),
  ])
  expect(leave.map((r) => r.statusCode)).toEqual([200, 200])
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  for (let i = 0; i < 4; i++) {
    const peek = await app.inject('/peek')
    expect(peek.statusCode, peek.body).toBe(200)
    expect(peek.json()).toEqual({ names: null })
  }

  await db.sql.unsafe('drop extension dblink')
  for (let i = 0; i < 6; i++) {
    const one = await app.inject('/one')
    expect(one.statusCode, one.body).toBe(200)
  }
  await db.sql.unsafe(`create schema elsewhere; create extension dblink schema "Remote Links"`)
  // Connections opened while it was gone do not know of it (README); those opened now do.
  await db.sql.unsafe('alter extension dblink set schema elsewhere')
  for (let i = 0; i < 6; i++) {
    const one = await app.inject('/one')
    expect(one.statusCode, one.body).toBe(200)
  }
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
})

import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../support/database.js'

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

// Found by hostile probing (fifth round), failing on ad56009: with sessionReset 'never', a
// begin() block the pool opened and abandoned (the request ended first) was never rolled back; the
// next request's write ran inside it, answered 200 and was never committed. The pool now ends its
// own block in every mode (and behind PgBouncer).
test("never: a request's begin() block the pool abandoned (no statement of the holder's) swallows the next request's write", async () => {
  current = await coreApp(
    db.url,
    { max: 1, sessionReset: 'never' },
    {},
    {
      leaseApplicationName: (request, route) => (request ? `label ${route}` : undefined),
    },
  )
  let started!: () => void
  const began = new Promise<void>((r) => {
    started = r
  })
  current.app.get('/dangle', async (request) => {
    request.db
      .begin(async () => {
        started()
        await sleep(200)
      })
      .catch(() => {})
    await began
    return { ok: true }
  })
  current.app.post('/write', async (request) => {
    const [row] = await request.db<
      { pid: number }[]
    >`insert into ledger (note) values ('w') returning pg_backend_pid() as pid`
    return row
  })
  expect((await current.app.inject('/dangle')).statusCode).toBe(200)
  await sleep(400)
  const write = await current.app.inject({ method: 'POST', url: '/write' })
  expect(write.statusCode).toBe(200)
  const [c] = await db.sql<{ n: number }[]>`select count(*)::int as n from ledger`
  expect(c?.n).toBe(1)
  // Not left idle in a transaction the pool opened: once the connection is back, it is idle.
  const pid = write.json().pid as number
  const state = async () =>
    (await db.admin<{ state: string }[]>`select state from pg_stat_activity where pid = ${pid}`)[0]?.state
  expect(await waitFor(async () => (await state()) === 'idle')).toBe(true)
})

import { Readable } from 'node:stream'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'

// Found while fixing the third round of hostile probing (web-stream-payload failed under load on
// PostgreSQL 15): postgres.js pauses its socket when a COPY TO STDOUT stream's buffer is full and
// resumes it only from the stream's read(). When the last rows and CopyDone arrive in one read,
// the COPY ends with the socket paused, and nothing resumes it: read() is never called on an
// ended stream. Every later answer on that connection (the route's COMMIT, the session reset, the
// next request's statements) then waited for the statement deadline. Before the fix: a route
// transaction that left such a COPY unread answered 503 FST_PG_POOL_COMMIT_UNKNOWN after
// statementTimeout + 1 s, and a COPY of its own returned as its payload was refused or committed
// depending on the timing. The adapter resumes the socket when a COPY TO ends (assumption 4d).
//
// Each handler waits until the COPY has ended on the server (its backend is idle) before it
// returns, so that the case tested is the one where the COPY is over, whatever the machine does.

// One row past the stream's 16 KiB buffer: its push pauses the socket.
const COPY = "copy (select repeat('x', 30000)) to stdout"

let db: TestDatabase
let current: TestApp
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (body text not null)`
})
beforeEach(async () => {
  await db.sql`truncate note`
  current = await coreApp(db.url, { max: 1, statementTimeout: 20_000 })
  base = undefined
})
afterEach(() => current.app.close())
afterAll(() => db.drop())

const notes = async () => (await db.sql<{ body: string }[]>`select body from note`).map((r) => r.body)

/** Resolves once the app's only backend has finished the COPY (idle, in a transaction or not). */
const copyEnded = (state: string) =>
  waitUntil(async () => (await db.countConnections(current.applicationName, state)) === 1, `the backend ${state}`)

let base: string | undefined
async function get(path: string): Promise<{ status: number; body: string }> {
  base ??= await listen(current.app)
  const response = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(10_000) })
  return { status: response.status, body: await response.text() }
}

describe('a COPY TO STDOUT that ended with its rows unread', () => {
  test('a route transaction that left it unread commits and answers 200', async () => {
    current.app.get('/unread', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values ('unread')`
      await request.db.unsafe(COPY).readable()
      await copyEnded('idle in transaction')
      return { ok: true }
    })
    expect(await get('/unread')).toEqual({ status: 200, body: '{"ok":true}' })
    expect(await notes()).toEqual(['unread'])
  })

  test('returned as the payload of its route transaction (a Node stream or a web stream): refused, nothing committed', async () => {
    current.app.get('/node', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values ('node')`
      const copy = await request.db.unsafe(COPY).readable()
      await copyEnded('idle in transaction')
      return copy
    })
    current.app.get('/web', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values ('web')`
      const copy = await request.db.unsafe(COPY).readable()
      await copyEnded('idle in transaction')
      return Readable.toWeb(copy)
    })
    for (const path of ['/node', '/web']) {
      const { status, body } = await get(path)
      expect({ path, status, code: JSON.parse(body).code }).toEqual({
        path,
        status: 500,
        code: 'FST_PG_POOL_COMMIT_FAILED',
      })
    }
    expect(await notes()).toEqual([])
  })

  test('on a route without a transaction: the next request on the connection is served', async () => {
    current.app.get('/ignore', async (request) => {
      await request.db.unsafe(COPY).readable()
      await copyEnded('idle')
      return { ok: true }
    })
    current.app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    expect(await get('/ignore')).toEqual({ status: 200, body: '{"ok":true}' })
    expect(await get('/next')).toEqual({ status: 200, body: '{"one":1}' })
  })
})

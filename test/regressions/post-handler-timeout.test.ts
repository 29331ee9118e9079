import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { listen } from '../support/http.js'

// Found by hostile probing (failed before the fix): `handlerTimeout` on a route whose request has a body. Fastify 5.12.8 aborts
// `request.signal` on the request's 'close' event (lib/route.js, `req.on('close', onAbort)`), and
// Node emits 'close' on an IncomingMessage as soon as its body has been read (autoDestroy), not
// when the client leaves. The core stops a lease when that signal aborts (request-lease.ts).

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (body text not null)`
})
beforeEach(async () => {
  await db.sql`truncate note`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const notes = async () => (await db.sql<{ body: string }[]>`select body from note order by body`).map((r) => r.body)

const post = (url: string, body: unknown) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  }).then(async (r) => ({ status: r.status, body: await r.json() }))

describe('handlerTimeout on a POST with a JSON body', () => {
  test('a healthy request well inside handlerTimeout is served and committed', async () => {
    current = await coreApp(db.url, { max: 2, acquireTimeout: 5_000 })
    const { app } = current
    app.post('/tx', { handlerTimeout: 5_000, config: { db: { transaction: true } } }, async (request) => {
      const { body } = request.body as { body: string }
      await request.db`insert into note values (${body})`
      await request.db`select pg_sleep(0.05)`
      return { ok: true }
    })
    app.post('/plain', { handlerTimeout: 5_000 }, async (request) => {
      const { body } = request.body as { body: string }
      await request.db`select pg_sleep(0.05)`
      await request.db`insert into note values (${body})`
      return { ok: true }
    })
    const base = await listen(app)
    const results = []
    for (let i = 0; i < 5; i++) {
      results.push(await post(`${base}/tx`, { body: `tx-${i}` }))
      results.push(await post(`${base}/plain`, { body: `plain-${i}` }))
    }
    // Before the fix: every one 500 {"code":"FST_PG_POOL_RELEASED"}.
    expect(results.map((r) => [r.status, (r.body as { code?: string }).code ?? 'ok'])).toEqual(
      Array(10).fill([200, 'ok']),
    )
    expect((await notes()).length).toBe(10)
  })
})

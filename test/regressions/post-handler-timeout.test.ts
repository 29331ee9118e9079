import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { listen } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

// Found by hostile probing (failed before the fix): `handlerTimeout` on a route whose request has a body. Fastify 5.12.8 aborts
// `request.signal` on the request's 'close' event (lib/route.js, `req.on('close', onAbort)`), and
// Node emits 'close' on an IncomingMessage as soon as its body has been read (autoDestroy), not
// when the client leaves. The core stops a lease when that signal aborts (request-lease.ts).

const fx = noteTable()
const notes = fx.notes

const post = (url: string, body: unknown) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  }).then(async (r) => ({ status: r.status, body: await r.json() }))

describe('handlerTimeout on a POST with a JSON body', () => {
  test('a healthy request well inside handlerTimeout is served and committed', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2, acquireTimeout: 5_000 })
    const { app } = fx.current
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

// DEFECT (probe-streams, medium: a request that never gets an answer; a stream left running).
// What the user does: a route transaction returns a stream whose first chunk does not come (an
// event source with nothing to say, a stuck upstream), with `handlerTimeout` set, or while the
// app closes (`app.close()`, past the pool's `closeTimeout`).
// What they see: the pool ends the transaction (rolled back, the lease back), but the client gets
// no answer at all: not Fastify's 503 on handlerTimeout, not the pool's 503 FST_PG_POOL_CLOSED on
// close (README "Route transactions": "app.close() past closeTimeout makes the reply a 503
// FST_PG_POOL_CLOSED ...; on a handlerTimeout, Fastify answers the request itself with its own
// 503"). The stream is never stopped, and `app.close()` does not finish while the client waits.
// Cause: request-lease.ts onSend waits for the stream's first chunk and stops waiting only on a
// hang-up (the response's close). Fastify's timeout reply goes through onSend while the first one
// waits, and is dropped as a second send; the pool's close aborts the lease but not the wait.
// Expected: once the pool has ended the transaction, the wait ends: the stream is stopped and the
// reply is the 503 that says so.
import { Readable } from 'node:stream'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'
import { exchange } from './kit.js'

const fx = noteTable()

describe('a route transaction whose stream has no first chunk', () => {
  const silent = {
    'a Node stream': () => {
      const stream = new Readable({ read() {} })
      return { payload: stream, stopped: () => stream.destroyed }
    },
    'a web Response': () => {
      let cancelled = false
      const body = new ReadableStream({
        cancel() {
          cancelled = true
        },
      })
      return { payload: new Response(body, { status: 201 }), stopped: () => cancelled }
    },
  }
  for (const [name, make] of Object.entries(silent)) {
    test(`handlerTimeout, ${name}: the client gets a 503, the stream is stopped, nothing committed`, async () => {
      fx.current = await coreApp(fx.db.url, { max: 1 })
      const { app } = fx.current
      let made: ReturnType<typeof make> | undefined
      app.post('/order', { config: { db: { transaction: true } }, handlerTimeout: 1_000 }, async (request) => {
        await request.db`insert into note values ('order')`
        made = make()
        return made.payload
      })
      const base = await listen(app)
      const res = await exchange(`${base}/order`, 'POST', 8_000)
      expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
      expect({ status: res.status, stopped: made?.stopped(), notes: await fx.notes() }).toEqual({
        status: 503,
        stopped: true,
        notes: [],
      })
    })
  }

  test('app.close() past closeTimeout: the client gets a 503 FST_PG_POOL_CLOSED, close finishes', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, closeTimeout: 300 })
    const { app } = fx.current
    let made: Readable | undefined
    app.post('/order', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values ('order')`
      made = new Readable({ read() {} })
      return made
    })
    const base = await listen(app)
    const answer = exchange(`${base}/order`, 'POST', 8_000)
    expect(await waitFor(() => made !== undefined)).toBe(true)
    const closing = app.close().then(() => 'closed')
    const res = await answer
    const closed = await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 5_000, 'still closing'))])
    made?.destroy()
    await closing
    fx.current = undefined
    expect({
      status: res.status,
      code: res.body === '' ? undefined : JSON.parse(res.body).code,
      closed,
      notes: await fx.notes(),
    }).toEqual({ status: 503, code: 'FST_PG_POOL_CLOSED', closed: 'closed', notes: [] })
  })
})

import { request as httpRequest } from 'node:http'
import { Readable } from 'node:stream'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'

// Found by hostile probing of client disconnects (failed before the fix): a route without a transaction streams a cursor as its payload; the
// README: "its connection stays leased until the stream has been sent (onResponse)". When the
// client hangs up mid-stream, Fastify runs no onResponse, and onRequestAbort only when
// `req.aborted` (Node sets it only when the request's body was not fully read). For a request
// with a body (POST, or anything the body parser consumed), nothing hands the lease back.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

/** Sends `method` (with a JSON body when `body`), reads about 20 kB of the reply, then hangs up. */
function readSomeThenHangUp(url: string, method: string, body?: unknown): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const text = body === undefined ? undefined : JSON.stringify(body)
    const req = httpRequest(url, {
      method,
      agent: false,
      headers:
        text === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
    })
    req.on('response', (res) => {
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`))
      let n = 0
      res.on('data', (chunk: Buffer) => {
        n += chunk.length
        if (n > 20_000) {
          req.destroy()
          resolve()
        }
      })
    })
    req.on('error', () => {})
    req.end(text)
  })
}

// The same on a GET passes (test/core/lifecycle-edges.test.ts pins it).
for (const method of ['POST'] as const) {
  test(`${method}: a streamed cursor, the client hangs up mid-stream: lease back, nothing left on the server`, async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 2_000 })
    const { app, applicationName } = current
    app.route({
      method,
      url: '/stream',
      handler: async (request, reply) => {
        const cursor = request.db`select i, repeat('x', 1000) as pad from generate_series(1, 200000) i`.cursor(100)
        async function* lines() {
          for await (const batch of cursor) for (const row of batch) yield `${row.i} ${row.pad}\n`
        }
        reply.type('text/plain')
        return Readable.from(lines())
      },
    })
    app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    await readSomeThenHangUp(`${base}/stream`, method, method === 'POST' ? { filter: 'all' } : undefined)
    const back = await waitFor(() => app.pgPool.stats().leased === 0, 5_000)
    // Neither the cursor's statement nor an open transaction is left behind.
    const busy = await waitFor(async () => (await db.countConnections(applicationName, 'active')) === 0, 2_000)
    const next = await app.inject('/next')
    expect({ back, busy, next: next.statusCode, stats: app.pgPool.stats() }).toMatchObject({
      back: true,
      busy: true,
      next: 200,
      stats: { leased: 0, waiting: 0 },
    })
  })
}

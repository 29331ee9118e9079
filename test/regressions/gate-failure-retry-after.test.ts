import { request as httpRequest } from 'node:http'
import Fastify from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, beforeAll, beforeEach, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'

// Found by hostile probing, third round (failed before the fix).
// Expected (packages/core/README.md l.247-249): "If the pool ends the transaction before the reply
// is decided (app.close() past closeTimeout cuts it, a handlerTimeout), the reply becomes a 503
// (FST_PG_POOL_CLOSED, or FST_PG_POOL_ABORTED) with Retry-After, whatever the handler returns
// afterwards"; errors table l.734: FST_PG_POOL_CLOSED is a 503 (retryable: Retry-After, as every
// suite 503 gets from error-mapping.ts). The JSON route of the same case (test/regressions/
// close-timeout-2xx) gets it.
//
// What happens instead, when the handler answers on reply.raw (hijacked or not — the path the
// new reply gate, reply-gate.ts, answers itself): a 503 FST_PG_POOL_CLOSED with no Retry-After
// header, and a body saying "error":"Internal Server Error" for a 503. A client or load balancer
// honouring Retry-After gets no hint; the body's error name contradicts the status.
//
// Root cause guess: packages/core/src/request-lease.ts failureBody() (~l.78-84) keeps only
// statusCode/code/message and hard-codes 'Internal Server Error'; reply-gate.ts Gate.#fail
// (~l.83-95) writes only content-type and content-length: the error's `headers`
// (withRetryAfter, lease.ts notCommitted) are dropped.

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (body text not null)`
})
beforeEach(async () => {
  await db.sql`truncate note`
})
afterAll(() => db.drop())

function post(url: string): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve) => {
    const req = httpRequest(url, { method: 'POST', agent: false, headers: { connection: 'close' } })
    req.on('response', (res) => {
      let body = ''
      res.on('data', (c) => {
        body += c
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }))
    })
    req.on('error', (error) => resolve({ status: 0, body: error.message, headers: {} }))
    req.end()
  })
}

for (const hijack of [true, false]) {
  test(`app.close() past closeTimeout, reply written on reply.raw (hijack: ${hijack}): 503 with Retry-After`, async () => {
    const applicationName = uniqueName()
    const app = Fastify()
    await app.register(pgPool, {
      connection: db.url,
      pool: { max: 1, acquireTimeout: 2000, closeTimeout: 200, applicationName, pgbouncer: db.viaBouncer },
    })
    let release: () => void = () => {}
    const external = new Promise<void>((r) => {
      release = r
    })
    let inserted = false
    app.post('/order', { config: { db: { transaction: true } } }, async (request, reply) => {
      await request.db`insert into note values ('order')`
      inserted = true
      if (hijack) reply.hijack()
      await external // e.g. a call to a payment service
      reply.raw.writeHead(200, { 'content-type': 'application/json' })
      reply.raw.end('{"ok":true}')
    })
    const base = await listen(app)
    const response = post(`${base}/order`)
    await waitUntil(() => inserted, 'the insert')
    const closing = app.close()
    await waitUntil(async () => (await db.countConnections(applicationName)) === 0, 'the connection cut', 5000)
    release()
    const r = await response
    await closing
    expect(await db.sql`select * from note`).toHaveLength(0)
    expect(r.status).toBe(503) // holds
    expect(JSON.parse(r.body)).toMatchObject({ code: 'FST_PG_POOL_CLOSED' }) // holds
    expect(r.headers['retry-after'], JSON.stringify(r.headers)).toBeDefined() // before the fix: undefined
    expect(JSON.parse(r.body).error).toBe('Service Unavailable') // before the fix: 'Internal Server Error'
  })
}

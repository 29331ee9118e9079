// Found by hostile probing (round nine, fastify-edges): a request that carries a content-type but an empty body
// (`Content-Length: 0`, or no length at all), which Fastify reads to its end with its content-type
// parser (text/plain here; @fastify/formbody's urlencoded likewise). `fetch(url, { method: 'POST',
// body: '' })` sends exactly this (`content-type: text/plain;charset=UTF-8`, `content-length: 0`).
//
// Node marks such a request `aborted` on a hang-up only while its body is unread, so Fastify's
// onRequestAbort never runs for it; and the core watched the response's early close only for a
// request whose headers announced a body (`hasBody`: content-length !== '0' or a
// transfer-encoding). Neither saw the hang-up: the work ran and committed, a streamed cursor held
// its connection for good. The metrics plugin had the same rule. Every test below failed before
// the fix: both now watch the response of every request.
import { request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import { Readable } from 'node:stream'
import Fastify from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { describe, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { coreApp } from '../support/app.js'
import { sleep, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const notes = fx.notes
const emptyText = { 'content-type': 'text/plain;charset=UTF-8', 'content-length': '0' }

/** Starts a POST with `headers` and no body; returns a function that hangs up on it. */
function startEmptyPost(url: string, headers: Record<string, string> = emptyText) {
  const req = httpRequest(url, { method: 'POST', agent: false, headers })
  req.on('error', () => {})
  req.on('response', (res) => res.resume())
  req.end()
  return { abort: () => req.destroy() }
}

describe('an empty-bodied POST whose client hangs up', () => {
  // Before the fix: the insert runs and commits (settled 'ran', rows ['gone-before-use']): the hang-up is
  // never seen. The same route over GET, or with a one-byte body, refuses that first use
  // (test/core/disconnect-attacks-3.test.ts control, test/regressions/post-hang-up-before-first-use).
  test('client gone before the first use of request.db: that use is refused and nothing is written', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2, acquireTimeout: 5_000, closeTimeout: 1_000 })
    const { app } = fx.current
    let release!: () => void
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    let entered = false
    let closed = false
    let settled: unknown
    app.post('/late', async (request, reply) => {
      entered = true
      reply.raw.on('close', () => {
        closed = true
      })
      await gate
      try {
        await request.db`insert into note values ('gone-before-use')`
        settled = 'ran'
      } catch (error) {
        settled = (error as { code?: string }).code ?? String(error)
      }
      return { ok: true }
    })
    const base = await listen(app)
    const client = startEmptyPost(`${base}/late`)
    await waitUntil(() => entered, 'the handler to start', 10_000)
    client.abort()
    await waitUntil(() => closed, 'the server to see the response close', 10_000)
    release()
    await waitUntil(() => settled !== undefined, 'the handler to settle', 10_000)
    await waitFor(() => app.pgPool.stats().leased === 0, 3_000)
    expect({ settled, rows: await notes() }).toEqual({ settled: expect.stringMatching(/^FST_PG_POOL_/), rows: [] })
  })

  // Before the fix: the pg_sleep runs to its end (settled 'ran'), holding the connection for its whole
  // duration (up to statementTimeout); only the final onSend sees the destroyed response and
  // rolls back (rows []). README "Aborts": "its queued queries fail with FST_PG_POOL_ABORTED, and
  // what runs is stopped ... The lease comes back within 100 ms of the abort".
  test('client gone mid-statement on a transaction route: the running statement is stopped with FST_PG_POOL_ABORTED', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2, acquireTimeout: 5_000, closeTimeout: 1_000 })
    const { app, applicationName } = fx.current
    let settled: unknown
    app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values ('mid-statement')`
      try {
        await request.db`select pg_sleep(2) as empty_post_sleep`
        settled = 'ran'
      } catch (error) {
        settled = (error as { code?: string }).code ?? String(error)
      }
      return { ok: true }
    })
    const base = await listen(app)
    const client = startEmptyPost(`${base}/tx`)
    await waitUntil(
      async () => (await fx.db.running(applicationName, '%empty_post_sleep%')) === 1,
      'the statement to run',
      10_000,
    )
    client.abort()
    await waitUntil(() => settled !== undefined, 'the handler to settle', 10_000)
    await waitFor(() => app.pgPool.stats().leased === 0, 3_000)
    expect({ settled, rows: await notes() }).toEqual({ settled: 'FST_PG_POOL_ABORTED', rows: [] })
  })

  // Before the fix: stats().leased stays 1 for good (pg_stat_activity shows the backend idle, held by no
  // request); with max 1 every later request gets 503 FST_PG_POOL_ACQUIRE_TIMEOUT. Only
  // app.close() (closeTimeout) gets it back. The same over GET is held (test/core/lifecycle-edges).
  // A client can leak one connection per request this way: `fetch(url, { method: 'POST', body: '',
  // signal })` and abort while the rows stream.
  test('a cursor streamed as the payload, client gone mid-stream: the connection comes back to the pool', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 1_000, closeTimeout: 1_000 })
    const { app } = fx.current
    app.post('/export', async (request, reply) => {
      const cursor = request.db`select i, repeat('x', 1000) as pad from generate_series(1, 200000) i`.cursor(100)
      async function* lines() {
        for await (const batch of cursor) for (const row of batch) yield `${row.i}\n`
      }
      reply.type('text/plain')
      return Readable.from(lines())
    })
    app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    await new Promise<void>((resolve) => {
      const req = httpRequest(`${base}/export`, { method: 'POST', agent: false, headers: emptyText })
      req.on('response', (res) => {
        let received = 0
        res.on('data', (chunk: Buffer) => {
          received += chunk.length
          if (received > 20_000) {
            req.destroy()
            resolve()
          }
        })
      })
      req.on('error', () => {})
      req.end()
    })
    await waitFor(() => app.pgPool.stats().leased === 0, 3_000)
    const next = await app.inject('/next')
    expect({ leased: app.pgPool.stats().leased, next: next.statusCode }).toEqual({ leased: 0, next: 200 })
  })

  // No hang-up at all: the handler itself ends its hijacked response with destroy() (an event
  // stream closed server-side). Before the fix: stats().leased stays 1 for good (same as above). Over GET,
  // Node marks the request aborted and onRequestAbort returns the lease.
  test('a hijacked POST without a body (content-type set) whose handler destroys its response: the connection comes back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 1_000, closeTimeout: 1_000 })
    const { app } = fx.current
    let done = false
    app.post('/events', async (request, reply) => {
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream' })
      const [row] = await request.db`select 1 as one`
      reply.raw.write(`data: ${row?.one}\n\n`)
      reply.raw.destroy()
      done = true
    })
    app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    const socket = connect(Number(new URL(base).port), '127.0.0.1')
    socket.on('error', () => {})
    fx.closers.push(async () => socket.destroy())
    // HTTP/1.1 with a content-type and no body (no Content-Length): what `curl -X POST -H
    // 'content-type: text/plain'` sends.
    socket.write('POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\r\n')
    await waitUntil(() => done, 'the handler to end', 10_000)
    await waitFor(() => app.pgPool.stats().leased === 0, 3_000)
    const next = await app.inject('/next')
    expect({ leased: app.pgPool.stats().leased, next: next.statusCode }).toEqual({ leased: 0, next: 200 })
  })
})

describe('metrics', () => {
  // Before the fix: only the one-byte POST is observed (status_class "aborted", count 1); the empty-bodied
  // POST's hang-up is observed under no status class at all. metrics README: "`aborted` when the
  // client hung up before the response".
  test('the HTTP histogram counts the hang-up of an empty-bodied POST as aborted, like that of a one-byte POST', async () => {
    const app = Fastify()
    fx.closers.push(() => app.close())
    await app.register(pgPool, {
      connection: fx.db.url,
      pool: { max: 2, applicationName: uniqueName(), closeTimeout: 1_000, pgbouncer: fx.db.viaBouncer },
      backpressure: false,
      health: false,
    })
    let release!: () => void
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    let entered = 0
    let closed = 0
    let finished = 0
    app.post('/late', async (request, reply) => {
      entered++
      reply.raw.on('close', () => {
        closed++
      })
      await gate
      await request.db`select 1`.catch(() => {})
      finished++
      return { ok: true }
    })
    const base = await listen(app)
    for (const [headers, body] of [
      [emptyText, undefined],
      [{ 'content-type': 'text/plain', 'content-length': '1' }, 'x'],
    ] as const) {
      const seen = entered
      const req = httpRequest(`${base}/late`, { method: 'POST', agent: false, headers })
      req.on('error', () => {})
      req.end(body)
      await waitUntil(() => entered > seen, 'the handler to start', 10_000)
      req.destroy()
      await waitUntil(() => closed > seen, 'the server to see the response close', 10_000)
    }
    release()
    await waitUntil(() => finished === 2, 'both handlers to end', 10_000)
    await sleep(100)
    const scrape = parseExposition(await (await fetch(`${base}/metrics`, { headers: { connection: 'close' } })).text())
    const counts = Object.fromEntries(
      scrape
        .find('pg_pool_http_request_duration_seconds_count', { route: '/late' })
        .map((s) => [s.labels.status_class, s.value]),
    )
    expect(counts).toEqual({ aborted: 2 })
  })
})

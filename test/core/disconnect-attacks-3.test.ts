import { request as httpRequest } from 'node:http'
import http2 from 'node:http2'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen, startPost } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

// Attacks that held.

const fx = noteTable()
const notes = fx.notes

describe('held: hang-ups seen', () => {
  test('control: GET, client gone before the first use: refused, nothing written', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2, acquireTimeout: 10_000 })
    const { app } = fx.current
    let release!: () => void
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    let entered = false
    let responseClosed = false
    let settled: unknown
    app.get('/late', async (request, reply) => {
      entered = true
      reply.raw.on('close', () => {
        responseClosed = true
      })
      await gate
      try {
        await request.db`insert into note values ('get-late')`
        settled = 'ran'
      } catch (error) {
        settled = (error as { code?: string }).code ?? String(error)
      }
      return { ok: true }
    })
    const base = await listen(app)
    const req = httpRequest(`${base}/late`, { agent: false })
    req.on('error', () => {})
    req.end()
    await waitUntil(() => entered, 'the handler to start', 10_000)
    req.destroy()
    await waitUntil(() => responseClosed, 'the server to see the response close', 10_000)
    release()
    await waitUntil(() => settled !== undefined, 'the handler to settle', 10_000)
    expect({ settled, rows: await notes() }).toEqual({ settled: expect.stringMatching(/^FST_PG_POOL_/), rows: [] })
  })

  test('HTTP/2 (h2c): the client cancels its stream mid-statement on a transaction route: rolled back', async () => {
    const applicationName = uniqueName()
    const app = Fastify({ http2: true })
    await app.register(pgPoolCore, {
      connection: fx.db.url,
      pool: { max: 1, acquireTimeout: 10_000, statementTimeout: 30_000, applicationName },
    })
    fx.closers.push(() => app.close())
    let settled: unknown
    app.get('/tx', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values ('h2-cancelled')`
      try {
        await request.db`select pg_sleep(4) as h2_sleep`
        settled = 'ran'
      } catch (error) {
        settled = (error as { code?: string }).code ?? String(error)
      }
      return { ok: true }
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    const session = http2.connect(`http://127.0.0.1:${port}`)
    session.on('error', () => {})
    fx.closers.unshift(async () => session.close())
    const stream = session.request({ ':path': '/tx' })
    stream.on('error', () => {})
    stream.resume()
    await waitUntil(
      async () => (await fx.db.running(applicationName, '%h2_sleep%')) === 1,
      'the statement to run',
      10_000,
    )
    stream.close(http2.constants.NGHTTP2_CANCEL)
    await waitUntil(() => settled !== undefined, 'the handler to settle', 15_000)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(
      await waitFor(async () => (await fx.db.countConnections(applicationName, 'idle in transaction')) === 0),
    ).toBe(true)
    expect({ settled, rows: await notes() }).toEqual({ settled: 'FST_PG_POOL_ABORTED', rows: [] })
  })

  test('app.close() while a transaction POST is in flight (default forceCloseConnections): answered 200, committed', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2, acquireTimeout: 10_000 })
    const { app } = fx.current
    let release!: () => void
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    let entered = false
    app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values ('in-flight')`
      entered = true
      await gate
      await request.db`insert into note values ('in-flight-2')`
      return { ok: true }
    })
    const base = await listen(app)
    const client = startPost(`${base}/tx`, { a: 1 })
    await waitUntil(() => entered, 'the handler', 10_000)
    const closing = app.close()
    fx.current = undefined
    // let close start (server stops listening), then let the handler finish
    await waitFor(() => !app.server.listening, 5_000)
    release()
    expect(await client.done).toBe(200)
    await closing
    expect(await notes()).toEqual(['in-flight', 'in-flight-2'])
  })
})

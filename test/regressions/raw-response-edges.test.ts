import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { uniqueName, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'
import { h2Request } from '../support/http2.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const

beforeAll(async () => {
  // A row that fails its foreign key at COMMIT (deferred): the COMMIT is refused.
  await fx.db.sql.unsafe(
    'create table dc (id int primary key, ref int references dc(id) deferrable initially deferred)',
  )
})

describe('HTTP/2', () => {
  // Before the fix (Fastify({ http2: true })): headers `:status 500`, `content-length: 139`, then no body
  // at all; the client's stream fails with ERR_HTTP2_STREAM_ERROR (NGHTTP2_PROTOCOL_ERROR: fewer
  // bytes than the content-length). Over HTTP/1.1 the same routes get the 139-byte JSON body.
  // Cause (best guess): reply-gate.ts #fail calls the original `end(body)`, but
  // Http2ServerResponse.end(chunk) writes its chunk through `this.write()`, which is the gate's
  // own wrapper, in state 'failed' by then: the body is dropped (reply-gate.ts write(): `if
  // (this.#state === 'failed') return ...`).
  test('a raw write (hijacked, or reply.raw.end without hijack) whose COMMIT fails: the 500 carries its coded JSON body', async () => {
    const app = Fastify({ http2: true })
    await app.register(pgPoolCore, { connection: fx.db.url, pool: { max: 2, applicationName: uniqueName() } })
    fx.closers.push(() => app.close())
    app.get('/hijacked', tx, async (request, reply) => {
      await request.db`insert into note values ('h2-hijacked')`
      await request.db`insert into dc values (1, 99)`
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.end('ok')
    })
    app.get('/raw', tx, async (request, reply) => {
      await request.db`insert into note values ('h2-raw')`
      await request.db`insert into dc values (2, 99)`
      reply.raw.end('ok')
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    for (const path of ['/hijacked', '/raw']) {
      const answer = await h2Request(port, path)
      expect({
        path,
        status: answer.status,
        error: answer.error,
        code: answer.body === '' ? '(no body)' : (JSON.parse(answer.body) as { code?: string }).code,
        bodyMatchesLength: Buffer.byteLength(answer.body) === Number(answer.headers?.['content-length']),
      }).toEqual({ path, status: 500, error: undefined, code: 'FST_PG_POOL_COMMIT_FAILED', bodyMatchesLength: true })
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
    expect(await notes()).toEqual([])
  })
})

describe('reply.raw written without hijack, then the handler throws', () => {
  // Before the fix: the client never gets the end of the response (headers 200 and 'partial' arrive after
  // the COMMIT, then nothing: still pending when the client gives up after 8 s; the socket stays
  // open). The core's onSend sees `gate.written`, logs "the response was written on reply.raw: the
  // payload sent after it is dropped" and returns without calling its done callback
  // (request-lease.ts onSend, `if (gate?.written) { ...; return }`), so Fastify never finishes the
  // reply and nothing ends reply.raw. Without the core (or on a route without a transaction, where
  // no gate is set), Fastify's error handling ends the response at once (the client gets the
  // 'partial' 200, or a reset connection).
  test('on a transaction route the response still ends (the client is not left waiting)', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2, closeTimeout: 1_000 })
    const { app } = fx.current
    app.get('/csv', tx, async (request, reply) => {
      const rows = await request.db`select i from generate_series(1, 3) i`
      reply.raw.writeHead(200, { 'content-type': 'text/csv' })
      reply.raw.write(`${rows[0]?.i}\n`)
      throw new Error('failed half-way through the export')
    })
    const base = await listen(app)
    const abort = new AbortController()
    const giveUp = setTimeout(() => abort.abort(), 8_000)
    let outcome: string
    try {
      const response = await fetch(`${base}/csv`, { signal: abort.signal, headers: { connection: 'close' } })
      await response.text()
      outcome = 'ended'
    } catch {
      // A reset connection also ends the exchange: the client knows it got no complete answer.
      outcome = abort.signal.aborted ? 'still pending after 8 s' : 'ended'
    } finally {
      clearTimeout(giveUp)
    }
    expect(outcome).toBe('ended')
  })
})

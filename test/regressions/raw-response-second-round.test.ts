// Found by hostile probing (round nine, second round, against 6211f53: hang-ups watched on every
// request, raw responses cut once the gate wrote). Both tests failed before the fix: a handler
// that resolved with nothing and ended its raw response later had it destroyed (Fastify's send of
// nothing, made only because the gate held the headers, was cut); an HTTP/2 stream answered with
// respondWithFile closed without the response's end(), read as a hang-up that cancelled the
// COMMIT. (Writes on the HTTP/2 stream itself bypass the gate: documented in the core README.)
import { writeFileSync } from 'node:fs'
import type http2 from 'node:http2'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import { beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { sleep, waitFor } from '../support/database.js'
import { rawExchange } from '../support/http.js'
import { h2Request } from '../support/http2.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const

beforeAll(async () => {
  // A row whose deferred constraint trigger sleeps at COMMIT: a COMMIT that takes 300 ms.
  await fx.db.sql.unsafe(
    `create function slow_commit() returns trigger language plpgsql as $$ begin perform pg_sleep(0.3); return null; end $$`,
  )
  await fx.db.sql.unsafe('create table slow (x int)')
  await fx.db.sql.unsafe(
    `create constraint trigger slow_commit after insert on slow deferrable initially deferred
     for each row execute function slow_commit()`,
  )
  // A row that fails its foreign key at COMMIT.
  await fx.db.sql.unsafe(
    'create table dc (id int primary key, ref int references dc(id) deferrable initially deferred)',
  )
})

/** The body of a chunked HTTP/1.1 response, and whether its last chunk came. */
/** An HTTP/2 GET's status, body and error (its headers left out of the comparisons here). */
async function h2Get(port: number, path: string) {
  const { headers: _, ...answer } = await h2Request(port, path)
  return answer
}

function dechunk(text: string): { status: number | undefined; body: string; complete: boolean } {
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]) || undefined
  const at = text.indexOf('\r\n\r\n')
  let rest = at === -1 ? '' : text.slice(at + 4)
  let body = ''
  for (;;) {
    const eol = rest.indexOf('\r\n')
    if (eol === -1) return { status, body, complete: false }
    const size = Number.parseInt(rest.slice(0, eol), 16)
    if (size === 0) return { status, body, complete: true }
    body += rest.slice(eol + 2, eol + 2 + size)
    rest = rest.slice(eol + 2 + size + 2)
  }
}

/**
 * A transaction route whose handler writes its response on reply.raw without hijacking, returns
 * nothing (Fastify sends nothing itself when the headers went out: `reply.raw.headersSent`), and
 * ends the response once its work is committed (a slow source piped into reply.raw, an event
 * stream): `part1,` at once, `part2` after the row is seen committed from another connection.
 */
function laterRoute(app: FastifyInstance, path: string, withTransaction: boolean): void {
  app.get(path, withTransaction ? tx : {}, async (request, reply) => {
    const tag = `${path}-${withTransaction ? 'tx' : 'plain'}`
    await request.db`insert into note values (${tag})`
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.write('part1,')
    void (async () => {
      await waitFor(async () => (await notes()).includes(tag), 5_000)
      await sleep(50)
      reply.raw.end('part2')
    })()
  })
}

describe('reply.raw written without hijack on a transaction route (reply-gate.ts + cutUnended)', () => {
  // Before the fix: the COMMIT succeeds (the row is there), then the client gets NOTHING over HTTP/1.1: no
  // status line, the socket just closes ({ status: undefined, body: '', complete: false }); over
  // HTTP/2 it gets `:status 200` and 'part1,' and then a clean end of stream: a silently truncated
  // 200 ({ status: 200, body: 'part1,', error: undefined }). The same route without a transaction
  // delivers 'part1,part2' whole over both (controls below), and so did this one before 6211f53.
  // Log: "the response was written on reply.raw: the payload sent after it is dropped".
  // Cause (best guess): the gate holds writeHead, so `reply.raw.headersSent` is still false when
  // the async handler resolves with undefined; Fastify's wrapThenable therefore calls
  // reply.send(undefined) (it would not have, the headers being out), the core's onSend sees
  // `gate.written`, and cutUnended (packages/core/src/request-lease.ts:177-183, called at :457)
  // destroys the response as soon as the gate wrote what it held, although the handler still
  // writes it. A payload of `undefined` that only exists because the gate hid the headers should
  // not cut anything (Fastify would not even have sent it).
  test('a handler that ends its raw response after the COMMIT (returning nothing) gets it delivered whole, HTTP/1.1 and HTTP/2', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2 })
    laterRoute(fx.current.app, '/later', true)
    laterRoute(fx.current.app, '/later-plain', false)
    await fx.current.app.listen({ port: 0, host: '127.0.0.1' })
    const h1port = (fx.current.app.server.address() as { port: number }).port
    const h1 = dechunk((await rawExchange(h1port, 'GET /later HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).text)
    const h1plain = dechunk(
      (await rawExchange(h1port, 'GET /later-plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).text,
    )

    const h2app = await coreApp(fx.db.url, { max: 2 }, { http2: true } as FastifyServerOptions)
    fx.closers.push(() => h2app.app.close())
    laterRoute(h2app.app, '/later2', true)
    laterRoute(h2app.app, '/later2-plain', false)
    await h2app.app.listen({ port: 0, host: '127.0.0.1' })
    const h2port = (h2app.app.server.address() as { port: number }).port
    const h2 = await h2Get(h2port, '/later2')
    const h2plain = await h2Get(h2port, '/later2-plain')

    expect(await notes()).toEqual(['/later-plain-plain', '/later-tx', '/later2-plain-plain', '/later2-tx'])
    // Controls: without a transaction the exchange is whole.
    expect({ h1plain, h2plain }).toEqual({
      h1plain: { status: 200, body: 'part1,part2', complete: true },
      h2plain: { status: 200, body: 'part1,part2', error: undefined },
    })
    expect({ h1, h2 }).toEqual({
      h1: { status: 200, body: 'part1,part2', complete: true },
      h2: { status: 200, body: 'part1,part2', error: undefined },
    })
  })
})

describe('HTTP/2 responses written on the stream (reply.raw.stream)', () => {
  // Before the fix: the client gets 200 'file-body' in full, yet nothing is committed (notes []); the log
  // says "returning the connection failed: COMMIT was sent and no answer came
  // (FST_PG_POOL_ABORTED) ... The request ended before its database work finished: canceling
  // statement due to user request". With a COMMIT faster than the 5 ms cancel delay the row
  // survives, so the loss depends on how long the COMMIT takes (deferred triggers, synchronous
  // replication). Before 6211f53 a GET's response close was not watched at all, and over HTTP/2
  // onRequestAbort runs only for a stream the client cancelled.
  // Cause (best guess): respondWithFile (like stream.respond() + stream.end()) never calls
  // Http2ServerResponse.end(), so `writableEnded` stays false; when the stream closes, Node's
  // compat layer emits 'finish' (Fastify's onResponse: the core starts the COMMIT,
  // request-lease.ts:600-609) and then 'close' on the response, which responseClosed
  // (request-lease.ts:165-169) takes for a hang-up: abortLeases -> lease.finish('abort') cancels
  // the COMMIT under way. A response that emitted 'finish' has been sent; an HTTP/2 stream that
  // closed without being aborted (`reply.raw.stream.rstCode === 0`, no 'aborted') is no hang-up.
  test('a hijacked transaction route answering with reply.raw.stream.respondWithFile commits its work (the stream closing is no hang-up)', async () => {
    const file = join(tmpdir(), `fastify-pg-pool-h2file-${process.pid}-ok.txt`)
    writeFileSync(file, 'file-body')
    fx.current = await coreApp(fx.db.url, { max: 2 }, { http2: true } as FastifyServerOptions)
    const { app, logs } = fx.current
    app.get('/download', tx, async (request, reply) => {
      await request.db`insert into note values ('downloaded')`
      await request.db`insert into slow values (1)`
      reply.hijack()
      ;(reply.raw as unknown as { stream: http2.ServerHttp2Stream }).stream.respondWithFile(file, {
        'content-type': 'text/plain',
      })
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const answer = await h2Get((app.server.address() as { port: number }).port, '/download')
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(answer).toEqual({ status: 200, body: 'file-body', error: undefined })
    const failures = logs.filter((l) => (l.level as number) >= 50).map((l) => l.msg)
    expect({ rows: await notes(), failures }).toEqual({ rows: ['downloaded'], failures: [] })
  })
})

// Attacks on the response 'close' watch that held (round ten of hostile probing), kept as
// regression tests: for each, a finished request is neither counted aborted nor rolled back, a
// hung-up one is, and every lease comes back.
import http2 from 'node:http2'
import { connect } from 'node:net'
import { PassThrough, Readable } from 'node:stream'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import { describe, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { coreApp } from '../support/app.js'
import { sleep, waitFor, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const

/** Request-duration counts by `route:status_class`. */
async function classes(app: FastifyInstance): Promise<Record<string, number>> {
  const m = parseExposition((await app.inject('/metrics')).body)
  const out: Record<string, number> = {}
  for (const s of m.find('pg_pool_http_request_duration_seconds_count', {})) {
    if (s.labels.route === '/metrics') continue
    const k = `${s.labels.route}:${s.labels.status_class}`
    out[k] = (out[k] ?? 0) + s.value
  }
  return out
}

/** Writes `wire` on one socket; resolves with all the server sent once it ended the socket. */
function exchange(port: number, wire: string | ((socket: ReturnType<typeof connect>) => void)): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let got = ''
    const timer = setTimeout(() => {
      socket.destroy()
      resolve(`${got}<no end>`)
    }, 8_000)
    socket.on('data', (d) => {
      got += d.toString('latin1')
    })
    socket.on('end', () => {
      clearTimeout(timer)
      resolve(got)
    })
    socket.on('error', () => {
      clearTimeout(timer)
      resolve(`${got}<error>`)
    })
    if (typeof wire === 'string') socket.write(wire)
    else wire(socket)
  })
}

const statuses = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]))

async function build(): Promise<{ app: FastifyInstance; port: number }> {
  fx.current = await coreApp(fx.db.url, { max: 3, acquireTimeout: 10_000 })
  const { app } = fx.current
  await app.register(pgPoolMetrics)
  app.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload))
  app.post('/expect', tx, async (request) => {
    await request.db`insert into note values (${`expect:${(request.body as { n: number }).n}`})`
    return { ok: true }
  })
  // A GET with a body: Fastify does not read it; the handler never does either.
  app.get('/get-body', tx, async (request) => {
    await request.db`insert into note values ('get-body')`
    return { ok: true }
  })
  // A body handed to the handler as a stream that it never reads.
  app.post('/unread', tx, async (request) => {
    await request.db`insert into note values ('unread')`
    return { ok: true }
  })
  return { app, port: Number(new URL(await listen(app)).port) }
}

describe('held: answered requests are not hang-ups', () => {
  test('Expect: 100-continue, the body sent after the 100: committed, counted 2xx, keep-alive goes on', async () => {
    const { app, port } = await build()
    const body = '{"n":1}'
    const text = await exchange(port, (socket) => {
      socket.write(
        `POST /expect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`,
      )
      let sent = false
      socket.on('data', (d) => {
        if (!sent && d.toString('latin1').includes('100 Continue')) {
          sent = true
          socket.write(body)
          // A second request on the same socket, once the first was answered.
          setTimeout(
            () =>
              socket.write(
                `POST /expect HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"n":2}`,
              ),
            100,
          )
        }
      })
    })
    expect(statuses(text)).toEqual([100, 200, 200])
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual(['expect:1', 'expect:2'])
    expect(await classes(app)).toEqual({ '/expect:2xx': 2 })
  })

  test('a GET with a body nobody reads, and a POST body handed over unread: committed, 2xx, the socket serves the next request', async () => {
    const { app, port } = await build()
    const big = 'x'.repeat(200_000)
    const text = await exchange(
      port,
      `GET /get-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello` +
        `POST /unread HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${big.length}\r\n\r\n${big}` +
        `GET /get-body HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    )
    expect(statuses(text)).toEqual([200, 200, 200])
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual(['get-body', 'get-body', 'unread'])
    expect(await classes(app)).toEqual({ '/get-body:2xx': 2, '/unread:2xx': 1 })
  })

  test('a response received whole, then the socket destroyed at once: committed, 2xx, not aborted', async () => {
    const { app, port } = await build()
    for (let i = 0; i < 5; i++) {
      await new Promise<void>((resolve) => {
        const socket = connect(port, '127.0.0.1')
        socket.on('error', () => {})
        socket.on('data', (d) => {
          if (d.toString('latin1').includes('{"ok":true}')) {
            socket.destroy()
            resolve()
          }
        })
        socket.write(`GET /get-body HTTP/1.1\r\nHost: x\r\n\r\n`)
      })
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect((await notes()).length).toBe(5)
    expect(await classes(app)).toEqual({ '/get-body:2xx': 5 })
  })
})

describe('held: hang-ups the watch sees', () => {
  test('two GETs pipelined on one socket, both mid-transaction when the client hangs up: both rolled back and counted aborted', async () => {
    fx.current = await coreApp(fx.db.url, { max: 3 })
    const { app } = fx.current
    await app.register(pgPoolMetrics)
    const entered: string[] = []
    let release!: () => void
    const hold = new Promise<void>((resolve) => {
      release = resolve
    })
    app.get('/tx/:n', tx, async (request) => {
      const n = (request.params as { n: string }).n
      await request.db`insert into note values (${n})`
      entered.push(n)
      await hold
      await request.db`insert into note values (${`${n}-after`})`
      return { ok: true }
    })
    const port = Number(new URL(await listen(app)).port)
    const socket = connect(port, '127.0.0.1')
    socket.on('error', () => {})
    socket.write('GET /tx/a HTTP/1.1\r\nHost: x\r\n\r\nGET /tx/b HTTP/1.1\r\nHost: x\r\n\r\n')
    await waitUntil(() => entered.length === 2, 'both handlers', 10_000)
    socket.destroy()
    await sleep(200)
    release()
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect({ rows: await notes(), metrics: await classes(app) }).toEqual({
      rows: [],
      metrics: { '/tx/:n:aborted': 2 },
    })
  })

  test('a streamed payload that errors half-way on a route without a transaction: the lease comes back, the next request is served', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 3_000 })
    const { app } = fx.current
    app.get('/broken', async (request) => {
      await request.db`select 1 as x`
      const out = new PassThrough()
      out.write('part,')
      setTimeout(() => out.destroy(new Error('source failed')), 50)
      return out
    })
    app.get('/cursor-broken', async (request) => {
      const cursor = request.db`select i from generate_series(1, 100000) i`.cursor(100)
      let n = 0
      return Readable.from(
        (async function* () {
          for await (const rows of cursor) {
            if (++n === 3) throw new Error('generator failed')
            yield `${rows.length}\n`
          }
        })(),
      )
    })
    app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    const port = Number(new URL(await listen(app)).port)
    for (const path of ['/broken', '/cursor-broken']) {
      const text = await exchange(port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
      // Cut: no last chunk.
      expect([path, text.includes('\r\n0\r\n\r\n')]).toEqual([path, false])
      expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    }
    expect((await app.inject('/next')).json()).toEqual({ one: 1 })
  })
})

describe('held: an HTTP/2 stream reset mid-transaction (no hook of the app ahead of the plugin)', () => {
  test('GET and POST: rolled back, counted aborted, not 2xx', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2 }, { http2: true } as FastifyServerOptions)
    const { app } = fx.current
    await app.register(pgPoolMetrics)
    const between: string[] = []
    let release!: () => void
    const hold = new Promise<void>((resolve) => {
      release = resolve
    })
    app.route({
      method: ['GET', 'POST'],
      url: '/tx',
      ...tx,
      handler: async (request) => {
        await request.db`insert into note values (${request.method})`
        between.push(request.method)
        await hold
        await request.db`insert into note values (${`${request.method}-2`})`.catch(() => {})
        return { ok: true }
      },
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    const session = http2.connect(`http://127.0.0.1:${port}`)
    session.on('error', () => {})
    fx.closers.unshift(async () => session.destroy())
    for (const method of ['GET', 'POST']) {
      const headers: http2.OutgoingHttpHeaders = { ':path': '/tx', ':method': method }
      if (method === 'POST') headers['content-type'] = 'application/json'
      const stream = session.request(headers)
      stream.on('error', () => {})
      stream.end(method === 'POST' ? '{"a":1}' : undefined)
      await waitUntil(() => between.includes(method), `the ${method} handler`, 10_000)
      stream.close(http2.constants.NGHTTP2_CANCEL)
    }
    await waitFor(() => app.pgPool.stats().leased === 0, 3_000)
    release()
    await sleep(200)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
    expect({ rows: await notes(), metrics: await classes(app) }).toEqual({ rows: [], metrics: { '/tx:aborted': 2 } })
  })
})

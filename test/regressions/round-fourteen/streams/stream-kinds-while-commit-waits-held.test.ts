// HELD (probe-streams): route transactions whose streamed payload the COMMIT waits for (33c1291).
// - Node streams of every shape Fastify sends: highWaterMark 0, empty (ended at once and later),
//   already ended and read, already flowing, a PassThrough written after the handler returned,
//   `reply.send(stream)` in the handler, a Buffer: 200 with the body, committed, lease back, and no
//   listener of the wait left on the stream or on reply.raw.
// - A web stream: re-wrapped lazily (the source is not read ahead of the client: memory bounded),
//   and a client that hangs up after the first chunk cancels the source.
// - Web payloads: Response.json, a null body, a byte stream, a string chunk, a Response with two
//   Set-Cookie headers (both kept through the re-wrap), a 409 Response (rolled back).
// - HTTP/2: a stream reset while the COMMIT waits rolls back and stops the stream (Node and web).
// - A client gone before the handler returned its stream: the stream is stopped, nothing committed.
// - A web source whose cancel() throws (during the wait) or rejects (after the first chunk), the
//   client hanging up: no process error, the lease back; a Node stream destroyed with a string
//   (not an Error) before its first chunk: a 500, rolled back.
// - HTTP/1.1 pipelining: two POSTs on one socket, the first waiting 300 ms for its first chunk on a
//   pool of one connection: both answered in order, both committed.
// - Pool of one: a stream whose first chunk needs `app.db` waits for the connection its own
//   transaction holds; it ends at acquireTimeout with the coded 503, nothing committed, clean session.
//   (Before 33c1291 it was served: the README's "a stream whose first chunk waits on something slow
//   keeps them" covers it, but says nothing of this pool wait.)
// - A first chunk that comes after app.close() passed closeTimeout: 503 FST_PG_POOL_CLOSED, nothing committed.
// - HEAD of a GET transaction route returning a Node stream: 200, the GET's work committed.
import { connect } from 'node:net'
import { PassThrough, Readable } from 'node:stream'
import { afterEach, describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { sleep, waitFor } from '../../../support/database.js'
import { listen, startPost } from '../../../support/http.js'
import { h2Request } from '../../../support/http2.js'
import { noteTable } from '../../../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../../../support/session-probe.js'
import { exchange, processErrors } from './kit.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const
const errorsOfProcess = processErrors()
afterEach(() => {
  expect(errorsOfProcess.stop()).toEqual([])
})

type Make = (reply: { send(payload: unknown): unknown }) => unknown

const kinds: Record<string, { make: Make; body: string }> = {
  'highWaterMark 0': {
    make: () =>
      new Readable({
        highWaterMark: 0,
        read() {
          setTimeout(() => {
            this.push('hwm0')
            this.push(null)
          }, 50)
        },
      }),
    body: 'hwm0',
  },
  'empty, ended at once': { make: () => Readable.from([]), body: '' },
  'empty, ended later': {
    make: () => {
      const stream = new Readable({ read() {} })
      setTimeout(() => stream.push(null), 100)
      return stream
    },
    body: '',
  },
  'already ended and read': {
    make: async () => {
      const stream = Readable.from(['gone'])
      stream.resume()
      await new Promise((resolve) => stream.once('end', resolve))
      return stream
    },
    body: '',
  },
  'already flowing': {
    make: () => {
      const stream = new Readable({ read() {} })
      stream.on('data', () => {})
      setTimeout(() => stream.push(null), 50)
      return stream
    },
    body: '',
  },
  'a PassThrough written after the handler returned': {
    make: () => {
      const stream = new PassThrough()
      setTimeout(() => stream.end('later'), 200)
      return stream
    },
    body: 'later',
  },
  'reply.send(stream) in the handler': {
    make: (reply) => reply.send(Readable.from(['sent'])),
    body: 'sent',
  },
  'a Buffer': { make: () => Buffer.from('buffer'), body: 'buffer' },
}

describe('streamed payloads of a route transaction', () => {
  test('every kind: 200 with its body, committed, lease back, no listener of the wait left', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    const left: Record<string, unknown> = {}
    for (const [at, [name, kind]] of Object.entries(kinds).entries()) {
      app.post(`/kind/${at}`, tx, async (request, reply) => {
        await request.db`insert into note values (${name})`
        const payload = await kind.make(reply)
        const raw = reply.raw
        const stream = payload instanceof Readable ? payload : undefined
        raw.once('finish', () => {
          // The wait's listeners ('readable' on the stream, 'close' on the response) are gone.
          left[name] = { readable: stream?.listenerCount('readable') ?? 0 }
        })
        return payload
      })
    }
    const base = await listen(app)
    for (const [at, [name, kind]] of Object.entries(kinds).entries()) {
      const res = await exchange(`${base}/kind/${at}`)
      expect({ name, res }).toEqual({ name, res: { status: 200, body: kind.body, whole: true } })
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await fx.notes()).toEqual(Object.keys(kinds).sort())
    expect(Object.values(left).every((v) => (v as { readable: number }).readable === 0)).toBe(true)
    await expectCleanSession(fx.db, fx.current)
  })

  test('a web stream: read lazily after its first chunk, cancelled when the client hangs up', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    let pulled = 0
    let cancelled = false
    app.post('/web', tx, async (request) => {
      await request.db`insert into note values ('web')`
      return new ReadableStream<Uint8Array>({
        pull(controller) {
          pulled++
          controller.enqueue(new Uint8Array(64 * 1024))
        },
        cancel() {
          cancelled = true
        },
      })
    })
    const base = await listen(app)
    const abort = new AbortController()
    const res = await fetch(`${base}/web`, { method: 'POST', signal: abort.signal })
    expect(res.status).toBe(200)
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    await reader.read()
    // The client reads no more: the source stops once the socket's buffers are full.
    let before = -1
    expect(
      await waitFor(
        async () => {
          const now = pulled
          await new Promise((resolve) => setTimeout(resolve, 300))
          const still = now === pulled && now === before
          before = now
          return still
        },
        10_000,
        0,
      ),
    ).toBe(true)
    // Bounded: far below what an unbounded read-ahead would buffer in that time (GBs).
    expect(pulled).toBeLessThan(1_000)
    abort.abort()
    expect(await waitFor(() => cancelled)).toBe(true)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await fx.notes()).toEqual(['web'])
  })

  test('HTTP/2: a stream reset while the COMMIT waits rolls back and stops the stream', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 }, { http2: true } as never)
    const { app } = fx.current
    let made: Readable | undefined
    app.get('/silent', tx, async (request) => {
      await request.db`insert into note values ('silent')`
      made = new Readable({ read() {} })
      return made
    })
    app.get('/late', tx, async (request) => {
      await request.db`insert into note values ('late')`
      const stream = new Readable({ read() {} })
      setTimeout(() => {
        stream.push('fine')
        stream.push(null)
      }, 200)
      return stream
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    const late = await h2Request(port, '/late')
    expect({ status: late.status, body: late.body, error: late.error }).toEqual({
      status: 200,
      body: 'fine',
      error: undefined,
    })
    // The client gives up after 700 ms: its session is destroyed (the stream reset).
    const silent = await h2Request(port, '/silent', { timeoutMs: 700 })
    expect(silent.status).toBeUndefined()
    expect(await waitFor(() => made?.destroyed === true)).toBe(true)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await fx.notes()).toEqual(['late'])
  })

  test('HTTP/1.1 pipelining: two POSTs on one socket, the first waiting for its first chunk', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.post('/p/:n', tx, async (request) => {
      const { n } = request.params as { n: string }
      await request.db`insert into note values (${`p${n}`})`
      const stream = new Readable({ read() {} })
      setTimeout(
        () => {
          stream.push(`body${n};`)
          stream.push(null)
        },
        n === '1' ? 300 : 0,
      )
      return stream
    })
    const base = await listen(app)
    const port = Number(new URL(base).port)
    const wire =
      'POST /p/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n' +
      'POST /p/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
    const text = await new Promise<string>((resolve) => {
      const socket = connect(port, '127.0.0.1')
      let got = ''
      socket.on('data', (chunk: Buffer) => {
        got += chunk.toString('latin1')
      })
      socket.on('close', () => resolve(got))
      socket.write(wire)
    })
    const statuses = [...text.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => m[1])
    expect(statuses).toEqual(['200', '200'])
    expect(text.indexOf('body1;')).toBeGreaterThan(-1)
    expect(text.indexOf('body1;')).toBeLessThan(text.indexOf('body2;'))
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await fx.notes()).toEqual(['p1', 'p2'])
  })

  test('pool of one: a first chunk that needs app.db ends at acquireTimeout, coded, rolled back', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 1_000 })
    const { app } = fx.current
    addSessionProbe(app)
    app.post('/report', tx, async (request) => {
      await request.db`insert into note values ('report')`
      return Readable.from(
        (async function* () {
          const [row] = await app.db`select 1 as one`
          yield JSON.stringify(row)
        })(),
      )
    })
    const base = await listen(app)
    const res = await exchange(`${base}/report`)
    expect({ status: res.status, code: JSON.parse(res.body).code }).toEqual({
      status: 503,
      code: 'FST_PG_POOL_ACQUIRE_TIMEOUT',
    })
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await fx.notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })

  test('a first chunk after app.close() passed closeTimeout: 503 FST_PG_POOL_CLOSED, nothing committed', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1, closeTimeout: 300 })
    const { app } = fx.current
    let made: Readable | undefined
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('order')`
      const stream = new Readable({ read() {} })
      made = stream
      return stream
    })
    const base = await listen(app)
    const answer = exchange(`${base}/order`)
    expect(await waitFor(() => made !== undefined)).toBe(true)
    const closing = app.close()
    // The pool ends the transaction at closeTimeout; the chunk comes later.
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    made?.push('late')
    made?.push(null)
    const res = await answer
    await closing
    fx.current = undefined
    expect({ status: res.status, code: res.body === '' ? '' : JSON.parse(res.body).code }).toEqual({
      status: 503,
      code: 'FST_PG_POOL_CLOSED',
    })
    expect(await fx.notes()).toEqual([])
  })

  test('HEAD of a GET transaction route returning a Node stream: 200, committed', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.get('/file', tx, async (request) => {
      await request.db`insert into note values ('head')`
      const stream = new Readable({ read() {} })
      setTimeout(() => {
        stream.push('content')
        stream.push(null)
      }, 100)
      return stream
    })
    const base = await listen(app)
    const res = await exchange(`${base}/file`, 'HEAD')
    expect(res).toEqual({ status: 200, body: '', whole: true })
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await fx.notes()).toEqual(['head'])
  })

  test('web payloads: each answered as Fastify answers it, committed by its status', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    const text = new TextEncoder()
    const once = (chunk: unknown) =>
      new ReadableStream({
        start(controller) {
          controller.enqueue(chunk)
          controller.close()
        },
      })
    const twoCookies = () => {
      const headers = new Headers()
      headers.append('set-cookie', 'a=1')
      headers.append('set-cookie', 'b=2')
      return headers
    }
    const web: Record<string, { make: () => unknown; status: number; body: string; cookies?: string[] }> = {
      'Response.json': { make: () => Response.json({ a: 1 }, { status: 201 }), status: 201, body: '{"a":1}' },
      'a null body': { make: () => new Response(null, { status: 202 }), status: 202, body: '' },
      'a byte stream': {
        make: () =>
          new ReadableStream({
            type: 'bytes',
            pull(controller) {
              controller.enqueue(text.encode('bytes'))
              controller.close()
            },
          }),
        status: 200,
        body: 'bytes',
      },
      'a string chunk': { make: () => once('str'), status: 200, body: 'str' },
      'two Set-Cookie headers': {
        make: () => new Response(once(text.encode('c')), { headers: twoCookies() }),
        status: 200,
        body: 'c',
        cookies: ['a=1', 'b=2'],
      },
      'a 409 Response': { make: () => new Response(once(text.encode('no')), { status: 409 }), status: 409, body: 'no' },
    }
    for (const [at, [name, kind]] of Object.entries(web).entries()) {
      app.post(`/web/${at}`, tx, async (request) => {
        await request.db`insert into note values (${name})`
        return kind.make()
      })
    }
    const base = await listen(app)
    for (const [at, [name, kind]] of Object.entries(web).entries()) {
      const res = await fetch(`${base}/web/${at}`, { method: 'POST' })
      const got = { name, status: res.status, body: await res.text(), cookies: res.headers.getSetCookie() }
      expect(got).toEqual({ name, status: kind.status, body: kind.body, cookies: kind.cookies ?? [] })
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    const committed = Object.entries(web)
      .filter(([, kind]) => kind.status < 400)
      .map(([name]) => name)
    expect(await fx.notes()).toEqual(committed.sort())
  })

  test('HTTP/2: a web Response whose body has no first chunk, the stream reset: cancelled, rolled back', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 }, { http2: true } as never)
    const { app } = fx.current
    let cancelled = false
    app.get('/web', tx, async (request) => {
      await request.db`insert into note values ('web')`
      const body = new ReadableStream({
        cancel() {
          cancelled = true
        },
      })
      return new Response(body, { status: 201 })
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    const res = await h2Request(port, '/web', { timeoutMs: 700 })
    expect(res.status).toBeUndefined()
    expect(await waitFor(() => cancelled)).toBe(true)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await fx.notes()).toEqual([])
  })

  test('a client gone before the handler returned its stream: the stream stopped, nothing committed', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    let node: Readable | undefined
    let webCancelled = false
    let returned = 0
    let written = false
    let gone = false
    // The handler returns its stream only once the client is gone.
    const afterHangUp = async () => {
      written = true
      await waitFor(() => gone, 10_000)
      await sleep(100)
    }
    app.post('/node', tx, async (request) => {
      await request.db`insert into note values ('node')`
      await afterHangUp()
      node = new Readable({ read() {} })
      returned++
      return node
    })
    app.post('/web', tx, async (request) => {
      await request.db`insert into note values ('web')`
      await afterHangUp()
      returned++
      return new ReadableStream({
        cancel() {
          webCancelled = true
        },
      })
    })
    const base = await listen(app)
    for (const url of ['/node', '/web']) {
      written = false
      gone = false
      const request = startPost(`${base}${url}`, {})
      expect(await waitFor(() => written)).toBe(true)
      request.abort()
      expect(await request.done).toBe('aborted')
      gone = true
      expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    }
    expect(await waitFor(() => returned === 2)).toBe(true)
    expect(await waitFor(() => node?.destroyed === true && webCancelled)).toBe(true)
    expect(await fx.notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })

  test('a source whose cancel fails, a stream failing with a string: no process error, rolled back', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    let cancels = 0
    let silentReturned = false
    app.post('/silent', tx, async (request) => {
      await request.db`insert into note values ('silent')`
      silentReturned = true
      return new ReadableStream({
        cancel() {
          cancels++
          throw new Error('cancel threw')
        },
      })
    })
    app.post('/after', tx, async (request) => {
      await request.db`insert into note values ('after')`
      return new ReadableStream({
        pull(controller) {
          controller.enqueue(new Uint8Array(1024 * 1024))
        },
        cancel() {
          cancels++
          return Promise.reject(new Error('cancel rejected'))
        },
      })
    })
    app.post('/string', tx, async (request) => {
      await request.db`insert into note values ('string')`
      const stream = new Readable({ read() {} })
      setTimeout(() => stream.destroy('a string' as unknown as Error), 50)
      return stream
    })
    const base = await listen(app)
    // During the wait: the client hangs up once the handler returned the silent stream.
    const silent = startPost(`${base}/silent`, {})
    expect(await waitFor(() => silentReturned)).toBe(true)
    silent.abort()
    await silent.done
    expect(await waitFor(() => cancels === 1)).toBe(true)
    // After the first chunk: the status came (the COMMIT ran), then the client hangs up.
    const abort = new AbortController()
    const after = await fetch(`${base}/after`, { method: 'POST', signal: abort.signal })
    expect(after.status).toBe(200)
    abort.abort()
    expect(await waitFor(() => cancels === 2)).toBe(true)
    const res = await app.inject({ method: 'POST', url: '/string' })
    expect(res.statusCode).toBe(500)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    // '/after' had its first chunk: committed, then cut by the hang-up.
    expect(await fx.notes()).toEqual(['after'])
  })
})

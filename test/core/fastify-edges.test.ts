// Hostile probing (round nine, fastify-edges): the plugin under Fastify features at the edges of
// the request life cycle. Attacks that held, kept as regression tests.
import { request as httpRequest } from 'node:http'
import http2 from 'node:http2'
import { connect } from 'node:net'
import { Readable } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyRequest } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { beforeAll, describe, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { coreApp } from '../support/app.js'
import { uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'
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

const codeOf = (error: unknown) => (error as { code?: string }).code ?? String(error)

/** Writes `wire` on a raw socket; resolves with everything the server sent once it closes. */
function rawExchange(port: number, wire: string) {
  const socket = connect(port, '127.0.0.1')
  let received = ''
  socket.on('data', (chunk) => {
    received += chunk.toString('latin1')
  })
  const closed = new Promise<string>((resolve) => {
    socket.on('close', () => resolve(received))
    socket.on('error', () => {})
  })
  socket.write(wire)
  return { socket, closed }
}

const statusesOf = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]))

describe('requests refused before the handler never take a connection', () => {
  test('400 (schema), 400 (bad JSON), 413, 415 and a throwing parser on transaction routes, while the one connection is held: answered at once, none waits, one backend', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 10_000 }, { bodyLimit: 200 })
    const { app, applicationName } = fx.current
    let acquires = 0
    app.pgPool.on('acquire', () => {
      acquires++
    })
    let release!: () => void
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    let holding = false
    app.post('/hold', tx, async (request) => {
      await request.db`insert into note values ('hold')`
      holding = true
      await gate
      return { ok: true }
    })
    app.post('/items', { ...tx, schema: { body: { type: 'object', required: ['name'] } } }, async (request) => {
      await request.db`insert into note values ('items')`
      return { ok: true }
    })
    app.addContentTypeParser('application/x-broken', (_request, _payload, done) => {
      done(Object.assign(new Error('unparseable'), { statusCode: 400 }), undefined)
    })
    const base = await listen(app)
    const held = fetch(`${base}/hold`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
    await waitUntil(() => holding, 'the connection to be held', 10_000)
    const invalid: [Record<string, string>, string][] = [
      [{ 'content-type': 'application/json' }, '{"other":1}'],
      [{ 'content-type': 'application/json' }, '{"name":'],
      [{ 'content-type': 'application/json' }, JSON.stringify({ name: 'x'.repeat(500) })],
      [{ 'content-type': 'application/xml' }, '<name/>'],
      [{ 'content-type': 'application/x-broken' }, 'x'],
    ]
    const statuses = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const [headers, body] = invalid[i % invalid.length] as [Record<string, string>, string]
        const response = await fetch(`${base}/items`, { method: 'POST', headers, body })
        await response.arrayBuffer()
        return response.status
      }),
    )
    expect(new Set(statuses)).toEqual(new Set([400, 413, 415]))
    expect(app.pgPool.stats()).toMatchObject({ leased: 1, waiting: 0 })
    expect(await fx.db.countConnections(applicationName)).toBe(1)
    release()
    expect((await held).status).toBe(200)
    expect(acquires).toBe(1)
    expect(await notes()).toEqual(['hold'])
  })

  test('work done before the refusal rolls back: a preValidation write then a 400, an onRequest write then a 413, a parser that wrote then threw', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 5_000 }, { bodyLimit: 100 })
    const { app } = fx.current
    app.post(
      '/validated',
      {
        ...tx,
        schema: { body: { type: 'object', required: ['a'] } },
        preValidation: async (request) => {
          await request.db`insert into note values ('pre-validation')`
        },
      },
      async () => ({ ok: true }),
    )
    app.post(
      '/limited',
      {
        ...tx,
        onRequest: async (request) => {
          await request.db`insert into note values ('on-request-413')`
        },
      },
      async () => ({ ok: true }),
    )
    await app.register(async (child) => {
      child.addContentTypeParser(
        'application/x-q',
        { parseAs: 'string' },
        async (request: FastifyRequest, body: string | Buffer) => {
          await request.db`insert into note values (${`parser-${String(body)}`})`
          if (body === 'bad') throw Object.assign(new Error('bad body'), { statusCode: 400 })
          return { body }
        },
      )
      child.post('/parsed', tx, async (request) => {
        await request.db`insert into note values ('handler')`
        return request.body
      })
    })
    const statuses = [
      (await app.inject({ method: 'POST', url: '/validated', payload: { b: 1 } })).statusCode,
      (await app.inject({ method: 'POST', url: '/limited', payload: { b: 'x'.repeat(500) } })).statusCode,
      (
        await app.inject({
          method: 'POST',
          url: '/parsed',
          payload: 'bad',
          headers: { 'content-type': 'application/x-q' },
        })
      ).statusCode,
      (
        await app.inject({
          method: 'POST',
          url: '/parsed',
          payload: 'good',
          headers: { 'content-type': 'application/x-q' },
        })
      ).statusCode,
    ]
    expect(statuses).toEqual([400, 413, 400, 200])
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual(['handler', 'parser-good'])
  })
})

describe('error handlers on transaction routes', () => {
  test('an error handler that throws itself: 500 from the default handler, rolled back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.setErrorHandler(async () => {
      throw new Error('the error handler broke')
    })
    app.get('/x', tx, async (request) => {
      await request.db`insert into note values ('handler-throws')`
      throw new Error('boom')
    })
    const response = await app.inject('/x')
    expect(response.statusCode).toBe(500)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual([])
  })

  test('an error handler answering 200 { ok: false } to a failed COMMIT: nothing committed, no loop, lease back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.setErrorHandler(async (error: { code?: string }, _request, reply) =>
      reply.code(200).send({ ok: false, code: error.code }),
    )
    app.get('/x', tx, async (request) => {
      await request.db`insert into note values ('commit-fails')`
      await request.db`insert into dc values (1, 99)`
      return { ok: true }
    })
    const response = await app.inject('/x')
    expect({ status: response.statusCode, body: response.json() }).toEqual({
      status: 200,
      body: { ok: false, code: 'FST_PG_POOL_COMMIT_FAILED' },
    })
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual([])
  })

  test('an error handler that queries request.db after a failed COMMIT: refused (RELEASED), answered 500, lease back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.setErrorHandler(async (error: { code?: string }, request, reply) => {
      const rows = await request.db`select 1 as one`
      return reply.code(500).send({ code: error.code, rows })
    })
    app.get('/x', tx, async (request) => {
      await request.db`insert into note values ('commit-fails')`
      await request.db`insert into dc values (1, 99)`
      return { ok: true }
    })
    const response = await app.inject('/x')
    expect({ status: response.statusCode, code: response.json().code }).toEqual({
      status: 500,
      code: 'FST_PG_POOL_RELEASED',
    })
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual([])
  })
})

describe('handler styles and statuses on transaction routes', () => {
  test('callback-style handlers (no promise): reply.send(value) commits, reply.send(error) rolls back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.get('/ok', tx, (request, reply) => {
      request.db`insert into note values ('callback-ok')`.then(
        () => reply.send({ ok: true }),
        (error) => reply.send(error),
      )
    })
    app.get('/err', tx, (request, reply) => {
      request.db`insert into note values ('callback-err')`.then(() => reply.send(new Error('nope')))
    })
    expect((await app.inject('/ok')).statusCode).toBe(200)
    expect((await app.inject('/err')).statusCode).toBe(500)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual(['callback-ok'])
  })

  test('reply.send() and then more queries in the handler (with and without a transaction): refused RELEASED, nothing of them runs', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    const after: unknown[] = []
    for (const [url, options] of [
      ['/plain', {}],
      ['/tx', tx],
    ] as const) {
      app.get(url, options, async (request, reply) => {
        await request.db`insert into note values (${`${url}-before`})`
        reply.send({ ok: true })
        try {
          await request.db`insert into note values (${`${url}-after`})`
          after.push('ran')
        } catch (error) {
          after.push(codeOf(error))
        }
        return reply
      })
    }
    expect((await app.inject('/plain')).statusCode).toBe(200)
    expect((await app.inject('/tx')).statusCode).toBe(200)
    expect(after).toEqual(['FST_PG_POOL_RELEASED', 'FST_PG_POOL_RELEASED'])
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual(['/plain-before', '/tx-before'])
  })

  test('204 with a payload, a redirect and a 304: committed, body rules kept', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.get('/204', tx, async (request, reply) => {
      await request.db`insert into note values ('204')`
      return reply.code(204).send({ dropped: true })
    })
    app.get('/302', tx, async (request, reply) => {
      await request.db`insert into note values ('302')`
      return reply.redirect('/204')
    })
    app.get('/304', tx, async (request, reply) => {
      await request.db`insert into note values ('304')`
      return reply.code(304).send()
    })
    const answers = [await app.inject('/204'), await app.inject('/302'), await app.inject('/304')]
    expect(answers.map((a) => [a.statusCode, a.body])).toEqual([
      [204, ''],
      [302, ''],
      [304, ''],
    ])
    expect(await notes()).toEqual(['204', '302', '304'])
  })

  test('control: reply.raw written without hijack then a throw, on a route WITHOUT a transaction: the exchange ends', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.get('/csv', async (request, reply) => {
      const rows = await request.db`select 1 as i`
      reply.raw.writeHead(200, { 'content-type': 'text/csv' })
      reply.raw.write(`${rows[0]?.i}\n`)
      throw new Error('failed half-way')
    })
    const base = await listen(app)
    const abort = new AbortController()
    const giveUp = setTimeout(() => abort.abort(), 8_000)
    const outcome = await fetch(`${base}/csv`, { signal: abort.signal, headers: { connection: 'close' } })
      .then((response) => response.text())
      .then(
        () => 'ended',
        () => (abort.signal.aborted ? 'pending' : 'ended'),
      )
    clearTimeout(giveUp)
    expect(outcome).toBe('ended')
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  })

  test('the onTimeout hook (connectionTimeout) querying request.db: nothing of the request commits, lease back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2 }, { connectionTimeout: 300 })
    const { app } = fx.current
    let hook: unknown
    let settled: unknown
    app.addHook('onTimeout', async (request) => {
      try {
        await request.db`insert into note values ('from-onTimeout')`
        hook = 'ran'
      } catch (error) {
        hook = codeOf(error)
      }
    })
    app.get('/slow', tx, async (request) => {
      await request.db`insert into note values ('handler')`
      try {
        await request.db`select pg_sleep(3) as on_timeout_sleep`
        settled = 'ran'
      } catch (error) {
        settled = codeOf(error)
      }
      return { ok: true }
    })
    const base = await listen(app)
    const req = httpRequest(`${base}/slow`, { agent: false })
    req.on('error', () => {})
    req.end()
    await waitUntil(() => hook !== undefined && settled !== undefined, 'the hook and the handler to settle', 10_000)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
    expect({ hook, settled, rows: await notes() }).toEqual({
      hook: expect.not.stringMatching(/^ran$/),
      settled: 'FST_PG_POOL_ABORTED',
      rows: [],
    })
  })
})

describe('HEAD routes', () => {
  test('automatic HEAD of a writing transaction GET (umbrella): 200, committed once, counted under HEAD and as one commit', async () => {
    const app = Fastify()
    fx.closers.push(() => app.close())
    await app.register(pgPool, {
      connection: fx.db.url,
      pool: { max: 2, applicationName: uniqueName(), pgbouncer: fx.db.viaBouncer },
      backpressure: false,
      health: false,
    })
    app.get('/touch', tx, async (request) => {
      await request.db`insert into note values (${request.method})`
      return { ok: true }
    })
    const base = await listen(app)
    const head = await fetch(`${base}/touch`, { method: 'HEAD' })
    expect({ status: head.status, body: await head.text() }).toEqual({ status: 200, body: '' })
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual(['HEAD'])
    const scrape = parseExposition(await (await fetch(`${base}/metrics`, { headers: { connection: 'close' } })).text())
    expect(scrape.value('pg_pool_transactions_total', { outcome: 'commit' })).toBe(1)
    expect(
      scrape
        .find('pg_pool_http_request_duration_seconds_count', { route: '/touch' })
        .map((s) => [s.labels.method, s.labels.status_class, s.value]),
    ).toEqual([['HEAD', '2xx', 1]])
  })
})

describe('HTTP/1.1 pipelining', () => {
  test('three requests on one socket, each setting its session: no setting crosses to the next', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 10_000 })
    const { app } = fx.current
    app.get('/who/:n', async (request) => {
      const { n } = request.params as { n: string }
      const [before] = await request.db`select coalesce(current_setting('app.who', true), '') as who`
      await request.db`select set_config('app.who', ${n}, false)`
      await request.db`select pg_sleep(0.05)`
      const [after] = await request.db`select current_setting('app.who', true) as who`
      return { n, before: before?.who, after: after?.who }
    })
    const base = await listen(app)
    const { closed } = rawExchange(
      Number(new URL(base).port),
      'GET /who/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /who/2 HTTP/1.1\r\nHost: x\r\n\r\nGET /who/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    )
    const text = await closed
    expect(statusesOf(text)).toEqual([200, 200, 200])
    const bodies = [...text.matchAll(/\{[^}]*\}/g)].map((m) => JSON.parse(m[0]))
    expect(bodies).toEqual(['1', '2', '3'].map((n) => ({ n, before: '', after: n })))
  })

  for (const [label, server, answered] of [
    ['default options', {}, true],
    ['return503OnClosing: false', { return503OnClosing: false }, true],
    ['forceCloseConnections: true', { forceCloseConnections: true }, false],
  ] as const) {
    test(`app.close() while three pipelined transaction requests are in flight (${label}): every 200 has its row, nothing else commits`, async () => {
      fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 10_000, closeTimeout: 5_000 }, server)
      const { app, applicationName } = fx.current
      app.get('/tx/:n', tx, async (request) => {
        const { n } = request.params as { n: string }
        await request.db`insert into note values (${n})`
        await request.db`select pg_sleep(0.3) as piped_close`
        return { n }
      })
      const base = await listen(app)
      const { closed } = rawExchange(
        Number(new URL(base).port),
        'GET /tx/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /tx/2 HTTP/1.1\r\nHost: x\r\n\r\nGET /tx/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      )
      await waitUntil(
        async () => (await fx.db.running(applicationName, '%piped_close%')) === 1,
        'the first to run',
        10_000,
      )
      const closing = app.close()
      const text = await closed
      await closing
      fx.current = undefined
      const committed = [...text.matchAll(/\{"n":"(\d)"\}/g)].map((m) => m[1] as string)
      expect(statusesOf(text).every((s) => s === 200)).toBe(true)
      expect(await notes()).toEqual(committed)
      expect(committed.length).toBe(answered ? 3 : 0)
    })
  }
})

describe('HTTP/2 (h2c)', () => {
  async function h2app(max: number) {
    const applicationName = uniqueName()
    const app = Fastify({ http2: true })
    await app.register(pgPoolCore, {
      connection: fx.db.url,
      pool: { max, acquireTimeout: 5_000, applicationName, pgbouncer: fx.db.viaBouncer },
    })
    fx.closers.push(() => app.close())
    return { app, applicationName, port: () => (app.server.address() as { port: number }).port }
  }
  function session(port: number): http2.ClientHttp2Session {
    const s = http2.connect(`http://127.0.0.1:${port}`)
    s.on('error', () => {})
    fx.closers.unshift(async () => s.destroy())
    return s
  }
  function request(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: string) {
    const stream = s.request(headers)
    stream.on('error', () => {})
    let text = ''
    const done = new Promise<{ status: number | undefined; body: string }>((resolve) => {
      let status: number | undefined
      stream.on('response', (h) => {
        status = Number(h[':status'])
      })
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => {
        text += chunk
      })
      stream.on('close', () => resolve({ status, body: text }))
    })
    stream.end(body)
    return { stream, done }
  }

  for (const method of ['GET', 'POST'] as const) {
    test(`a stream cancelled between two statements of a transaction ${method}: nothing committed, the next use refused`, async () => {
      const { app, port } = await h2app(1)
      let release!: () => void
      const gate = new Promise<void>((resolve) => {
        release = resolve
      })
      let between = false
      let settled: unknown
      app.route({
        method,
        url: '/tx',
        ...tx,
        handler: async (request) => {
          await request.db`insert into note values ('first')`
          between = true
          await gate
          try {
            await request.db`insert into note values ('second')`
            settled = 'ran'
          } catch (error) {
            settled = codeOf(error)
          }
          return { ok: true }
        },
      })
      await app.listen({ port: 0, host: '127.0.0.1' })
      const headers: http2.OutgoingHttpHeaders = { ':path': '/tx', ':method': method }
      if (method === 'POST') headers['content-type'] = 'application/json'
      const { stream } = request(session(port()), headers, method === 'POST' ? '{"a":1}' : undefined)
      await waitUntil(() => between, 'the first statement', 10_000)
      stream.close(http2.constants.NGHTTP2_CANCEL)
      await waitFor(() => app.pgPool.stats().leased === 0, 3_000)
      release()
      await waitUntil(() => settled !== undefined, 'the handler to settle', 10_000)
      expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
      // The handler's next statement after the hang-up: ABORTED (RELEASED until round ten).
      expect({ settled, rows: await notes() }).toEqual({ settled: 'FST_PG_POOL_ABORTED', rows: [] })
    })
  }

  test('the session destroyed with three transaction streams mid-statement: all rolled back, all leases back', async () => {
    const { app, port, applicationName } = await h2app(3)
    const settled: unknown[] = []
    app.get('/tx/:n', tx, async (request) => {
      await request.db`insert into note values (${(request.params as { n: string }).n})`
      try {
        await request.db`select pg_sleep(3) as h2_session_sleep`
        settled.push('ran')
      } catch (error) {
        settled.push(codeOf(error))
      }
      return { ok: true }
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const s = session(port())
    for (const n of ['1', '2', '3']) request(s, { ':path': `/tx/${n}` })
    await waitUntil(
      async () => (await fx.db.running(applicationName, '%h2_session_sleep%')) === 3,
      'the three statements to run',
      10_000,
    )
    s.destroy()
    await waitUntil(() => settled.length === 3, 'the handlers to settle', 10_000)
    expect(settled).toEqual(['FST_PG_POOL_ABORTED', 'FST_PG_POOL_ABORTED', 'FST_PG_POOL_ABORTED'])
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
    expect(
      await waitFor(async () => (await fx.db.countConnections(applicationName, 'idle in transaction')) === 0),
    ).toBe(true)
    expect(await notes()).toEqual([])
  })

  test('a cursor streamed as the payload, the stream cancelled mid-way: lease back, nothing runs on', async () => {
    const { app, port, applicationName } = await h2app(1)
    app.get('/stream', async (request, reply) => {
      const cursor = request.db`select i, repeat('x', 1000) as pad from generate_series(1, 200000) i`.cursor(100)
      async function* lines() {
        for await (const batch of cursor) for (const row of batch) yield `${row.i}\n`
      }
      reply.type('text/plain')
      return Readable.from(lines())
    })
    app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    await app.listen({ port: 0, host: '127.0.0.1' })
    const stream = session(port()).request({ ':path': '/stream' })
    stream.on('error', () => {})
    await new Promise<void>((resolve) => {
      let received = 0
      stream.on('data', (chunk: Buffer) => {
        received += chunk.length
        if (received > 20_000) {
          stream.close(http2.constants.NGHTTP2_CANCEL)
          resolve()
        }
      })
    })
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 3_000)).toBe(true)
    expect(await fx.db.countConnections(applicationName, 'active')).toBe(0)
    expect((await app.inject('/next')).json()).toEqual({ one: 1 })
  })

  test('HEAD of a transaction GET, and a hijacked transaction route whose COMMIT succeeds: committed, bodies intact', async () => {
    const { app, port } = await h2app(2)
    app.get('/touch', tx, async (request) => {
      await request.db`insert into note values ('h2-head')`
      return { ok: true }
    })
    app.get('/hijacked', tx, async (request, reply) => {
      await request.db`insert into note values ('h2-hijacked')`
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.end('written raw')
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const s = session(port())
    const head = await request(s, { ':path': '/touch', ':method': 'HEAD' }).done
    const hijacked = await request(s, { ':path': '/hijacked' }).done
    expect([head, hijacked]).toEqual([
      { status: 200, body: '' },
      { status: 200, body: 'written raw' },
    ])
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect((await notes()).sort()).toEqual(['h2-head', 'h2-hijacked'])
  })
})

describe('encapsulation', () => {
  test('the core in a prefixed child context: its routes work; a route outside has no request.db; a sibling with a named instance reaches both', async () => {
    const app = Fastify()
    fx.closers.push(() => app.close())
    const name = uniqueName()
    await app.register(
      async (api) => {
        await api.register(pgPoolCore, {
          connection: fx.db.url,
          pool: { max: 2, applicationName: name, pgbouncer: fx.db.viaBouncer },
        })
        api.get('/in', tx, async (request) => {
          await request.db`insert into note values ('in')`
          return { ok: true }
        })
      },
      { prefix: '/api' },
    )
    await app.register(
      async (other) => {
        await other.register(pgPoolCore, {
          name: 'b',
          connection: fx.db.url,
          pool: { max: 2, applicationName: `${name}-b`, pgbouncer: fx.db.viaBouncer },
        })
        other.get('/b', { config: { db: { instance: 'b' } } }, async (request) => {
          const [row] = await request.db`select 1 as one`
          return row
        })
      },
      { prefix: '/other' },
    )
    app.get('/out', async (request) => ({ db: typeof (request as { db?: unknown }).db }))
    expect((await app.inject('/api/in')).statusCode).toBe(200)
    expect((await app.inject('/other/b')).json()).toEqual({ one: 1 })
    expect((await app.inject('/out')).json()).toEqual({ db: 'undefined' })
    expect(await notes()).toEqual(['in'])
  })
})

// Hostile probing (round nine, second round, against 6211f53 / 60ec3e3): attacks that held, kept as regression tests.
import { writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import type http2 from 'node:http2'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { finished, pipeline } from 'node:stream/promises'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import type { FastifyInstance, FastifyServerOptions, RouteHandlerMethod } from 'fastify'
import { beforeAll, describe, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { coreApp } from '../support/app.js'
import { sleep, waitFor, waitUntil } from '../support/database.js'
import { listen, rawExchange } from '../support/http.js'
import { h2Request } from '../support/http2.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const
const tick = () => new Promise((resolve) => setTimeout(resolve, 5))

beforeAll(async () => {
  await fx.db.sql.unsafe(
    'create table dc (id int primary key, ref int references dc(id) deferrable initially deferred)',
  )
  await fx.db.sql.unsafe(
    `create function slow_commit() returns trigger language plpgsql as $$ begin perform pg_sleep(2); return null; end $$`,
  )
  await fx.db.sql.unsafe('create table slow (x int)')
  await fx.db.sql.unsafe(
    `create constraint trigger slow_commit after insert on slow deferrable initially deferred
     for each row execute function slow_commit()`,
  )
})

async function abortedCount(app: FastifyInstance): Promise<number> {
  const m = parseExposition((await app.inject('/metrics')).body)
  return m
    .find('pg_pool_http_request_duration_seconds_count', { status_class: 'aborted' })
    .reduce((s, x) => s + x.value, 0)
}

/** Every way to answer, GET and POST, on transaction routes (one without). */
function replyKinds(app: FastifyInstance): void {
  const tag = (request: { query: unknown; url: string }) =>
    `${request.url.split('?')[0]}:${(request.query as { t?: string }).t ?? ''}`
  for (const method of ['GET', 'POST'] as const) {
    const route = (url: string, handler: RouteHandlerMethod, plain = false) =>
      app.route({ method, url, ...(plain ? {} : tx), handler })
    route('/json', async (request) => {
      await request.db`insert into note values (${tag(request)})`
      return { ok: true }
    })
    route('/hijack', async (request, reply) => {
      await request.db`insert into note values (${tag(request)})`
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.end('ok')
    })
    route('/raw', async (request, reply) => {
      await request.db`insert into note values (${tag(request)})`
      reply.raw.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' })
      reply.raw.end('ok')
    })
    route('/raw-return-reply-later', async (request, reply) => {
      await request.db`insert into note values (${tag(request)})`
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.write('a')
      setTimeout(() => reply.raw.end('b'), 150)
      return reply
    })
    route('/204', async (request, reply) => {
      await request.db`insert into note values (${tag(request)})`
      return reply.code(204).send()
    })
    route('/304', async (request, reply) => {
      await request.db`insert into note values (${tag(request)})`
      return reply.code(304).send()
    })
    route('/node-stream', async (request) => {
      await request.db`insert into note values (${tag(request)})`
      return Readable.from(['a', 'b', 'c'])
    })
    route('/web-response', async (request) => {
      await request.db`insert into note values (${tag(request)})`
      return new Response('made', { status: 201 })
    })
    route(
      '/plain-cursor',
      async (request) => {
        await request.db`insert into note values (${tag(request)})`
        const rows = request.db`select i from generate_series(1, 2000) i`.cursor(100)
        return Readable.from(
          (async function* () {
            for await (const batch of rows) yield `${batch.length}\n`
          })(),
        )
      },
      true,
    )
    route('/sse', async (request, reply) => {
      await request.db`insert into note values (${tag(request)})`
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      for (let i = 0; i < 3; i++) {
        reply.raw.write(`data: ${i}\n\n`)
        await tick()
      }
      reply.raw.end()
    })
  }
}
const kinds = [
  '/json',
  '/hijack',
  '/raw',
  '/raw-return-reply-later',
  '/204',
  '/304',
  '/node-stream',
  '/web-response',
  '/plain-cursor',
  '/sse',
]
const statusOf: Record<string, number> = { '/204': 204, '/304': 304, '/web-response': 201 }

describe('held: no false hang-ups on the shapes the fix newly watches', () => {
  test('empty-bodied POSTs with a content-type (fetch body "", keep-alive): every kind of reply committed, none aborted', async () => {
    fx.current = await coreApp(fx.db.url, { max: 3, acquireTimeout: 10_000 })
    const { app } = fx.current
    await app.register(pgPoolMetrics)
    replyKinds(app)
    const base = await listen(app)
    const expected: string[] = []
    for (const path of kinds) {
      const res = await fetch(`${base}${path}?t=empty`, { method: 'POST', body: '' })
      await res.arrayBuffer()
      expect([path, res.status]).toEqual([path, statusOf[path] ?? 200])
      expected.push(`${path}:empty`)
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual(expected.sort())
    expect(await abortedCount(app)).toBe(0)
  })

  test('HTTP/2 (h2c) GET, HEAD and empty POST of every kind of reply: all committed, none aborted', async () => {
    fx.current = await coreApp(fx.db.url, { max: 3, acquireTimeout: 10_000 }, { http2: true } as FastifyServerOptions)
    const { app } = fx.current
    await app.register(pgPoolMetrics)
    replyKinds(app)
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    const expected: string[] = []
    for (const path of kinds) {
      for (const [method, t, body] of [
        ['GET', 'h2get', undefined],
        ['HEAD', 'h2head', undefined],
        ['POST', 'h2post', ''],
      ] as const) {
        // Fastify's own HEAD route fails on a web Response payload (head-route.js byteLength: 500,
        // with or without the core): left out.
        if (path === '/web-response' && method === 'HEAD') continue
        const answer = await h2Request(port, `${path}?t=${t}`, { method, body })
        expect([path, method, answer.status, answer.error]).toEqual([path, method, statusOf[path] ?? 200, undefined])
        expected.push(`${path}:${t}`)
      }
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual(expected.sort())
    expect(await abortedCount(app)).toBe(0)
  })

  test('HTTP/2 respondWithFile on a route without a transaction: counted 2xx (not aborted), the connection is reused', async () => {
    const file = join(tmpdir(), `probe-fixes-a-held-${process.pid}.txt`)
    writeFileSync(file, 'file-body')
    fx.current = await coreApp(fx.db.url, { max: 1 }, { http2: true } as FastifyServerOptions)
    const { app } = fx.current
    await app.register(pgPoolMetrics)
    const pids: number[] = []
    app.get('/file', async (request, reply) => {
      const [row] = await request.db`select pg_backend_pid() as pid`
      pids.push(row?.pid as number)
      reply.hijack()
      ;(reply.raw as unknown as { stream: http2.ServerHttp2Stream }).stream.respondWithFile(file)
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    for (let i = 0; i < 3; i++) {
      expect((await h2Request(port, '/file')).body).toBe('file-body')
      expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    }
    expect(new Set(pids).size).toBe(1)
    expect(await abortedCount(app)).toBe(0)
  })

  test('app.close() with forceCloseConnections: true while an empty-bodied transaction POST is in flight: a 200 only with its rows', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2, acquireTimeout: 10_000 }, { forceCloseConnections: true })
    const { app } = fx.current
    let release!: () => void
    const hold = new Promise<void>((resolve) => {
      release = resolve
    })
    let entered = false
    app.post('/tx', tx, async (request) => {
      await request.db`insert into note values ('in-flight')`
      entered = true
      await hold
      await request.db`insert into note values ('in-flight-2')`
      return { ok: true }
    })
    const base = await listen(app)
    const status = new Promise<number | string>((resolve) => {
      const req = httpRequest(`${base}/tx`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain', 'content-length': '0' },
      })
      req.on('response', (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', (error) => resolve((error as { code?: string }).code ?? 'error'))
      req.end()
    })
    await waitUntil(() => entered, 'the handler', 10_000)
    const closing = app.close()
    fx.current = undefined
    await waitFor(() => !app.server.listening, 5_000)
    release()
    const got = await status
    await closing
    const rows = await notes()
    expect(got === 200 ? rows : { got, rows }).toEqual(got === 200 ? ['in-flight', 'in-flight-2'] : { got, rows: [] })
  })
})

describe('held: the reply gate (raw writes on transaction routes)', () => {
  test('a synchronous handler ending reply.raw later, and an async one returning reply: delivered whole and committed', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2 })
    const { app } = fx.current
    app.get('/sync-later', tx, (request, reply) => {
      void request.db`insert into note values ('sync-later')`.then(() => {
        reply.raw.writeHead(200, { 'content-type': 'text/plain' })
        reply.raw.write('a,')
        setTimeout(() => reply.raw.end('b'), 150)
      })
    })
    app.get('/return-reply', tx, async (request, reply) => {
      await request.db`insert into note values ('return-reply')`
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.write('a,')
      setTimeout(() => reply.raw.end('b'), 150)
      return reply
    })
    const base = await listen(app)
    for (const path of ['/sync-later', '/return-reply']) {
      const res = await fetch(`${base}${path}`)
      expect([path, res.status, await res.text()]).toEqual([path, 200, 'a,b'])
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual(['return-reply', 'sync-later'])
  })

  test('raw writes then a returned value: cut like Fastify cuts it without a transaction (both get nothing), work committed', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2 })
    const { app } = fx.current
    for (const [path, config] of [
      ['/tx', tx],
      ['/plain', {}],
    ] as const) {
      app.get(path, config, async (request, reply) => {
        await request.db`insert into note values (${path})`
        reply.raw.writeHead(200, { 'content-type': 'text/plain' })
        reply.raw.write('part1,')
        setTimeout(() => reply.raw.end('part2'), 100)
        return { x: 1 }
      })
    }
    const base = await listen(app)
    const port = Number(new URL(base).port)
    const got: Record<string, unknown> = {}
    for (const path of ['/tx', '/plain']) {
      got[path] = (await rawExchange(port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)).text
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(got['/tx']).toBe(got['/plain'])
    expect(await notes()).toEqual(['/plain', '/tx'])
  })

  test('a failed COMMIT of raw writes (GET 200 with body, hijacked 204, HEAD) over HTTP/1.1 and HTTP/2: a 500 with its coded body (none for HEAD), nothing committed', async () => {
    const routes = (app: FastifyInstance) => {
      let id = 0
      app.route({
        method: ['GET', 'HEAD'],
        url: '/fail-raw',
        ...tx,
        handler: async (request, reply) => {
          await request.db`insert into note values ('fail-raw')`
          await request.db`insert into dc values (${++id}, 99999)`
          reply.raw.writeHead(200, { 'content-type': 'text/plain', 'x-kept': 'yes' })
          reply.raw.end('ok')
        },
      })
      app.route({
        method: ['GET', 'HEAD'],
        url: '/fail-204',
        ...tx,
        handler: async (request, reply) => {
          await request.db`insert into note values ('fail-204')`
          await request.db`insert into dc values (${++id}, 99999)`
          reply.hijack()
          reply.raw.writeHead(204)
          reply.raw.end()
        },
      })
    }
    const h1 = await coreApp(fx.db.url, { max: 2 })
    fx.closers.push(() => h1.app.close())
    routes(h1.app)
    await h1.app.listen({ port: 0, host: '127.0.0.1' })
    const h2 = await coreApp(fx.db.url, { max: 2 }, { http2: true } as FastifyServerOptions)
    fx.closers.push(() => h2.app.close())
    routes(h2.app)
    await h2.app.listen({ port: 0, host: '127.0.0.1' })
    const h1port = (h1.app.server.address() as { port: number }).port
    const h2port = (h2.app.server.address() as { port: number }).port
    for (const path of ['/fail-raw', '/fail-204']) {
      for (const method of ['GET', 'HEAD']) {
        const one = await rawExchange(h1port, `${method} ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
        const [head, body = ''] = one.text.split('\r\n\r\n')
        const length = Number(/content-length: (\d+)/i.exec(head ?? '')?.[1])
        expect([path, method, one.how, /^HTTP\/1\.1 (\d+)/.exec(one.text)?.[1]]).toEqual([path, method, 'end', '500'])
        if (method === 'GET') {
          expect((JSON.parse(body) as { code: string }).code).toBe('FST_PG_POOL_COMMIT_FAILED')
          expect(Buffer.byteLength(body)).toBe(length)
        } else expect(body).toBe('')
        const two = await h2Request(h2port, path, { method })
        expect([path, method, two.status, two.error]).toEqual([path, method, 500, undefined])
        if (method === 'GET') {
          expect((JSON.parse(two.body) as { code: string }).code).toBe('FST_PG_POOL_COMMIT_FAILED')
          expect(Buffer.byteLength(two.body)).toBe(Number(two.headers?.['content-length']))
        } else expect(two.body).toBe('')
      }
    }
    expect(await waitFor(() => h1.app.pgPool.stats().leased === 0 && h2.app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual([])
  })

  test('a COMMIT whose backend is terminated while it runs, after a raw write: 503 COMMIT_UNKNOWN with Retry-After over HTTP/1.1 and HTTP/2', async () => {
    const route = (app: FastifyInstance, applicationName: string) => {
      app.get('/unknown', tx, async (request, reply) => {
        await request.db`insert into note values ('unknown')`
        await request.db`insert into slow values (1)` // the COMMIT sleeps 2 s
        void (async () => {
          // Terminated once it is seen running its COMMIT.
          const running = async () =>
            (
              await fx.db.sql<{ pid: number }[]>`select pid from pg_stat_activity
                where application_name = ${applicationName} and query = 'COMMIT' and state = 'active'`
            )[0]?.pid
          let pid: number | undefined
          await waitFor(async () => {
            pid = await running()
            return pid !== undefined
          }, 5_000)
          if (pid !== undefined) await fx.db.sql`select pg_terminate_backend(${pid})`
        })()
        reply.raw.writeHead(200, { 'content-type': 'text/plain' })
        reply.raw.end('ok')
      })
    }
    const h1 = await coreApp(fx.db.url, { max: 2 })
    fx.closers.push(() => h1.app.close())
    route(h1.app, h1.applicationName)
    await h1.app.listen({ port: 0, host: '127.0.0.1' })
    const h2 = await coreApp(fx.db.url, { max: 2 }, { http2: true } as FastifyServerOptions)
    fx.closers.push(() => h2.app.close())
    route(h2.app, h2.applicationName)
    await h2.app.listen({ port: 0, host: '127.0.0.1' })
    const one = await rawExchange(
      (h1.app.server.address() as { port: number }).port,
      'GET /unknown HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    )
    const two = await h2Request((h2.app.server.address() as { port: number }).port, '/unknown')
    expect(/^HTTP\/1\.1 (\d+)/.exec(one.text)?.[1]).toBe('503')
    expect(one.text).toMatch(/retry-after: \d+/i)
    expect(one.text).toContain('FST_PG_POOL_COMMIT_UNKNOWN')
    expect({ status: two.status, retryAfter: two.headers?.['retry-after'] !== undefined, error: two.error }).toEqual({
      status: 503,
      retryAfter: true,
      error: undefined,
    })
    expect((JSON.parse(two.body) as { code: string }).code).toBe('FST_PG_POOL_COMMIT_UNKNOWN')
    expect(await waitFor(() => h1.app.pgPool.stats().leased === 0 && h2.app.pgPool.stats().leased === 0)).toBe(true)
  })
})

describe('held: COPY stream errors still reach their holder (60ec3e3)', () => {
  const failing = 'copy (select 1 / (i - 3) from generate_series(1, 5) i) to stdout'
  const failingFirst = 'copy (select 1 / (i - 1) from generate_series(1, 5) i) to stdout'
  const within = <T>(p: Promise<T>, ms: number) =>
    Promise.race([p, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), ms).unref())])

  test('returned as payload, for await, pipeline()/finished() attached after the error, COPY FROM with a bad row: never a clean 200, every lease back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 3_000, statementTimeout: 4_000 })
    const { app } = fx.current
    app.get('/payload-after-rows', async (request) => request.db.unsafe(failing).readable())
    app.get('/payload-first-row', async (request) => request.db.unsafe(failingFirst).readable())
    app.get('/for-await', tx, async (request) => {
      await request.db`insert into note values ('for-await')`
      let n = 0
      for await (const c of await request.db.unsafe(failing).readable()) n += (c as Buffer).length
      return { n }
    })
    app.get('/for-await-swallowed', tx, async (request) => {
      await request.db`insert into note values ('for-await-swallowed')`
      let n = 0
      try {
        for await (const c of await request.db.unsafe(failing).readable()) n += (c as Buffer).length
      } catch {
        // swallowed: the COMMIT must still fail
      }
      return { n }
    })
    app.get('/late-pipeline', async (request) => {
      const s = await request.db.unsafe(failing).readable()
      await sleep(200) // the error came meanwhile, nobody of the holder's listening
      await pipeline(s, new Writable({ write: (_c, _e, cb) => cb() }))
      return { ok: true }
    })
    app.get('/late-for-await', async (request) => {
      const s = await request.db.unsafe(failing).readable()
      await sleep(200)
      for await (const _ of s) {
        // read
      }
      return { ok: true }
    })
    app.get('/late-finished', async (request) => {
      const s = await request.db.unsafe(failing).readable()
      await sleep(200)
      s.resume()
      await finished(s)
      return { ok: true }
    })
    app.post('/from-bad-row', async (request) => {
      const w = await request.db`copy note (body) from stdin`.writable()
      w.write('a\n')
      w.write('b\tc\n') // an extra column
      w.end()
      await finished(w)
      return { ok: true }
    })
    app.post('/from-not-awaited', tx, async (request) => {
      await request.db`insert into note values ('not-awaited')`
      const w = await request.db`copy note (body) from stdin`.writable()
      w.write('a\n')
      w.write('b\tc\n')
      w.end()
      return { ok: true }
    })
    const base = await listen(app)
    const outcomes: Record<string, string> = {}
    for (const [method, path] of [
      ['GET', '/payload-after-rows'],
      ['GET', '/payload-first-row'],
      ['GET', '/for-await'],
      ['GET', '/for-await-swallowed'],
      ['GET', '/late-pipeline'],
      ['GET', '/late-for-await'],
      ['GET', '/late-finished'],
      ['POST', '/from-bad-row'],
      ['POST', '/from-not-awaited'],
    ] as const) {
      const r = await within(
        (async () => {
          const res = await fetch(`${base}${path}`, { method })
          const body = await res.text().catch(() => 'cut')
          if (body === 'cut') return `${res.status} cut`
          return `${res.status} ${(JSON.parse(body) as { code?: string }).code ?? body}`
        })(),
        8_000,
      )
      outcomes[path] = r
      expect([path, await waitFor(() => app.pgPool.stats().leased === 0, 5_000)]).toEqual([path, true])
    }
    // The status goes with the first rows when they were written before the error came: then the
    // body is cut; else the error's status.
    expect(['200 cut', '400 22012']).toContain(outcomes['/payload-after-rows'])
    delete outcomes['/payload-after-rows']
    expect(outcomes).toEqual({
      '/payload-first-row': '400 22012',
      '/for-await': '400 22012',
      '/for-await-swallowed': '500 FST_PG_POOL_COMMIT_FAILED',
      '/late-pipeline': '400 22012',
      '/late-for-await': '400 22012',
      '/late-finished': '400 22012',
      '/from-bad-row': '400 22P04',
      '/from-not-awaited': '500 FST_PG_POOL_COMMIT_FAILED',
    })
    expect(await notes()).toEqual([])
    expect(
      await waitFor(async () => (await fx.db.countConnections(fx.current?.applicationName ?? '', 'active')) === 0),
    ).toBe(true)
  })

  test('a COPY TO STDOUT payload whose backend is terminated mid-stream: the body is cut (no clean end), the pool serves the next request', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 3_000 })
    const { app, applicationName } = fx.current
    app.get('/export', async (request) =>
      request.db.unsafe('copy (select i, pg_sleep(0.002) from generate_series(1, 3000) i) to stdout').readable(),
    )
    app.get('/next', async (request) => (await request.db`select 7 as n`)[0])
    const base = await listen(app)
    const res = await fetch(`${base}/export`)
    expect(res.status).toBe(200)
    const reading = res.text().then(
      () => 'clean end',
      () => 'cut',
    )
    await waitUntil(async () => (await fx.db.countConnections(applicationName, 'active')) > 0, 'the COPY to run', 5_000)
    await fx.db.sql`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${applicationName}`
    expect(await reading).toBe('cut')
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect((await app.inject('/next')).json()).toEqual({ n: 7 })
  })
})

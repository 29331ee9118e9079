import { connect } from 'node:net'
import { Readable } from 'node:stream'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import type { FastifyInstance } from 'fastify'
import { describe, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { coreApp, type TestApp } from '../support/app.js'
import { waitFor } from '../support/database.js'
import { listen } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

// Attacks on the new "response closed before writableEnded = hang-up" rule: every normal way to
// answer must commit its route transaction and never count as aborted.

const fx = noteTable()
const notes = fx.notes
const tx = { config: { db: { transaction: true } } }
const tick = () => new Promise((resolve) => setTimeout(resolve, 5))

function routes(app: FastifyInstance): void {
  const tag = (request: { query: unknown; url: string }) =>
    `${request.url.split('?')[0]}:${(request.query as { t?: string }).t ?? ''}`
  for (const method of ['GET', 'POST'] as const) {
    app.route({
      method,
      url: '/hijack',
      ...tx,
      handler: async (request, reply) => {
        await request.db`insert into note values (${tag(request)})`
        reply.hijack()
        reply.raw.writeHead(200, { 'content-type': 'text/plain' })
        reply.raw.end('ok')
      },
    })
    app.route({
      method,
      url: '/raw',
      ...tx,
      handler: async (request, reply) => {
        await request.db`insert into note values (${tag(request)})`
        reply.raw.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' })
        reply.raw.end('ok')
        return reply
      },
    })
    app.route({
      method,
      url: '/204',
      ...tx,
      handler: async (request, reply) => {
        await request.db`insert into note values (${tag(request)})`
        return reply.code(204).send()
      },
    })
    app.route({
      method,
      url: '/304',
      ...tx,
      handler: async (request, reply) => {
        await request.db`insert into note values (${tag(request)})`
        return reply.code(304).send()
      },
    })
    app.route({
      method,
      url: '/redirect',
      ...tx,
      handler: async (request, reply) => {
        await request.db`insert into note values (${tag(request)})`
        return reply.redirect('/elsewhere', 303)
      },
    })
    app.route({
      method,
      url: '/node-stream',
      ...tx,
      handler: async (request) => {
        await request.db`insert into note values (${tag(request)})`
        return Readable.from(['a', 'b', 'c'])
      },
    })
    app.route({
      method,
      url: '/web-stream',
      ...tx,
      handler: async (request) => {
        await request.db`insert into note values (${tag(request)})`
        return new ReadableStream({
          start(c) {
            c.enqueue(new TextEncoder().encode('web'))
            c.close()
          },
        })
      },
    })
    app.route({
      method,
      url: '/web-response',
      ...tx,
      handler: async (request) => {
        await request.db`insert into note values (${tag(request)})`
        return new Response('made', { status: 201 })
      },
    })
    app.route({
      method,
      url: '/plain-cursor',
      handler: async (request) => {
        await request.db`insert into note values (${tag(request)})`
        const rows = request.db`select i from generate_series(1, 2000) i`.cursor(100)
        return Readable.from(
          (async function* () {
            for await (const batch of rows) yield `${batch.length}\n`
          })(),
        )
      },
    })
    app.route({
      method,
      url: '/sse',
      ...tx,
      handler: async (request, reply) => {
        await request.db`insert into note values (${tag(request)})`
        reply.hijack()
        reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
        for (let i = 0; i < 3; i++) {
          reply.raw.write(`data: ${i}\n\n`)
          await tick()
        }
        reply.raw.end()
      },
    })
  }
}
const paths = [
  '/hijack',
  '/raw',
  '/204',
  '/304',
  '/redirect',
  '/node-stream',
  '/web-stream',
  '/web-response',
  '/plain-cursor',
  '/sse',
]

async function aborted(app: FastifyInstance): Promise<number> {
  const m = parseExposition((await app.inject('/metrics')).body)
  return m
    .find('pg_pool_http_request_duration_seconds_count', { status_class: 'aborted' })
    .reduce((s, x) => s + x.value, 0)
}

async function build(): Promise<TestApp> {
  fx.current = await coreApp(fx.db.url, { max: 3, acquireTimeout: 10_000 })
  await fx.current.app.register(pgPoolMetrics)
  routes(fx.current.app)
  return fx.current
}

describe('answered requests are not hang-ups', () => {
  test('fetch (keep-alive), GET and POST of every kind of reply: all committed, none counted aborted', async () => {
    const { app } = await build()
    const base = await listen(app)
    const expected: string[] = []
    for (const method of ['GET', 'POST']) {
      for (const path of paths) {
        const res = await fetch(`${base}${path}?t=${method}`, {
          method,
          redirect: 'manual',
          ...(method === 'POST'
            ? { body: JSON.stringify({ a: 1 }), headers: { 'content-type': 'application/json' } }
            : {}),
        })
        await res.arrayBuffer()
        expect([path, res.status]).toEqual([
          path,
          ({ '/204': 204, '/304': 304, '/redirect': 303, '/web-response': 201 } as Record<string, number>)[path] ?? 200,
        ])
        expected.push(`${path}:${method}`)
      }
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual(expected.sort())
    expect(await aborted(app)).toBe(0)
  })

  test('HEAD of each GET route, and Connection: close: committed, not aborted', async () => {
    const { app } = await build()
    const base = await listen(app)
    const expected: string[] = []
    for (const path of paths) {
      const head = await fetch(`${base}${path}?t=HEAD`, { method: 'HEAD', redirect: 'manual' })
      await head.arrayBuffer()
      expected.push(`${path}:HEAD`)
      const closing = await fetch(`${base}${path}?t=close`, {
        redirect: 'manual',
        headers: { connection: 'close' },
      }).catch((e) => e)
      if (closing instanceof Response) await closing.arrayBuffer()
      expected.push(`${path}:close`)
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual(expected.sort())
    expect(await aborted(app)).toBe(0)
  })

  test('HTTP pipelining: every route in one write on one socket (last with Connection: close): all answered, all committed', async () => {
    const { app } = await build()
    const base = await listen(app)
    const port = Number(new URL(base).port)
    const body = JSON.stringify({ a: 1 })
    const pipelined = paths.filter((p) => p !== '/sse')
    let wire = ''
    const expected: string[] = []
    pipelined.forEach((path, i) => {
      for (const method of ['GET', 'POST']) {
        const last = i === pipelined.length - 1 && method === 'POST'
        const headers = [`Host: x`, last ? 'Connection: close' : 'Connection: keep-alive']
        if (method === 'POST') headers.push('Content-Type: application/json', `Content-Length: ${body.length}`)
        wire += `${method} ${path}?t=pipe${method} HTTP/1.1\r\n${headers.join('\r\n')}\r\n\r\n${method === 'POST' ? body : ''}`
        expected.push(`${path}:pipe${method}`)
      }
    })
    const text = await new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1')
      let got = ''
      socket.on('data', (d) => {
        got += d.toString('latin1')
      })
      socket.on('end', () => resolve(got))
      socket.on('error', reject)
      socket.write(wire)
    })
    const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]))
    expect(statuses.length).toBe(expected.length)
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual(expected.sort())
    expect(await aborted(app)).toBe(0)
  })

  test('inject (light-my-request) of every route, GET and POST: committed, not aborted', async () => {
    const { app } = await build()
    await app.ready()
    const expected: string[] = []
    for (const method of ['GET', 'POST'] as const) {
      for (const path of paths) {
        const res = await app.inject({
          method,
          url: `${path}?t=inj${method}`,
          ...(method === 'POST' ? { payload: { a: 1 } } : {}),
        })
        expect([path, res.statusCode < 400]).toEqual([path, true])
        expected.push(`${path}:inj${method}`)
      }
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual(expected.sort())
    expect(await aborted(app)).toBe(0)
  })

  test('inject with payloadAsStream, read to the end: committed, not aborted', async () => {
    const { app } = await build()
    await app.ready()
    const expected: string[] = []
    for (const path of paths) {
      const res = await app.inject({ method: 'GET', url: `${path}?t=injs`, payloadAsStream: true })
      for await (const _ of res.stream()) {
        // read all
      }
      expected.push(`${path}:injs`)
    }
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual(expected.sort())
    expect(await aborted(app)).toBe(0)
  })
})

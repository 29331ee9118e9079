// Held attacks (second round against ce363c5/3837354, hang-up.ts hungUp = !writableFinished ...):
// responses delivered whole must not read as cut. 4 MB buffers (route transaction), 4 MB Node
// streams and a cursor streamed on a route without a transaction, over HTTP/1.1 (fast and slow
// readers, the client destroying its socket the moment the body ended, HEAD) and HTTP/2 (session
// closed or destroyed right after the stream's end, a slow reader, HEAD): every one committed,
// counted 2xx (never `aborted`), every lease back.
import { request as httpRequest } from 'node:http'
import http2 from 'node:http2'
import { Readable } from 'node:stream'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import { expect, test } from 'vitest'
import { parseExposition } from '../../metrics/exposition.js'
import { coreApp } from '../../support/app.js'
import { sleep, waitFor } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'

const fx = noteTable()
const SIZE = 4 * 1024 * 1024

async function classes(app: FastifyInstance) {
  const m = parseExposition((await app.inject('/metrics')).body)
  const out: Record<string, number> = {}
  for (const s of m.find('pg_pool_http_request_duration_seconds_count', {})) {
    if (s.labels.route === '/metrics') continue
    const k = `${s.labels.route}:${s.labels.status_class}`
    out[k] = (out[k] ?? 0) + s.value
  }
  return out
}

function routes(app: FastifyInstance) {
  app.get('/buf', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into note values ('buf')`
    reply.type('application/octet-stream')
    return Buffer.alloc(SIZE, 97)
  })
  app.get('/stream', async (request, reply) => {
    await request.db`insert into note values ('stream')`
    reply.type('application/octet-stream')
    let sent = 0
    return new Readable({
      read() {
        if (sent >= SIZE) return this.push(null)
        sent += 65536
        this.push(Buffer.alloc(65536, 98))
      },
    })
  })
  app.get('/cursor', async (request, reply) => {
    reply.type('application/octet-stream')
    const db = request.db
    async function* gen() {
      for await (const rows of db`select repeat('x', 1000) as x from generate_series(1, 4000)`.cursor(100)) {
        for (const r of rows) yield r.x
      }
    }
    return Readable.from(gen())
  })
}

test('HTTP/1.1: 4 MB buffer, stream and cursor, fast, slow and HEAD, socket destroyed at the end: committed, 2xx', {
  timeout: 45_000,
}, async () => {
  fx.current = await coreApp(fx.db.url, { max: 3 })
  const { app } = fx.current
  await app.register(pgPoolMetrics)
  routes(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as { port: number }).port
  for (const path of ['/buf', '/stream', '/cursor']) {
    for (const method of ['GET', 'GET-slow', 'HEAD']) {
      const slow = method === 'GET-slow'
      const got = await new Promise<number>((resolve) => {
        const req = httpRequest(
          { port, host: '127.0.0.1', path, agent: false, method: method === 'HEAD' ? 'HEAD' : 'GET' },
          (res) => {
            let n = 0
            res.on('data', (c: Buffer) => {
              n += c.length
              if (slow) {
                res.pause()
                setTimeout(() => res.resume(), 2)
              }
            })
            res.on('end', () => {
              req.socket?.destroy()
              resolve(n)
            })
          },
        )
        req.end()
      })
      expect(got).toBe(method === 'HEAD' ? 0 : path === '/cursor' ? 4_000_000 : SIZE)
    }
  }
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 5000)).toBe(true)
  await sleep(200)
  expect({ classes: await classes(app), rows: (await fx.notes()).length }).toEqual({
    classes: { '/buf:2xx': 3, '/stream:2xx': 3, '/cursor:2xx': 3 },
    rows: 6,
  })
})

test('HTTP/2: 4 MB buffer, stream and cursor, session closed or destroyed at the end, slow, HEAD: committed, 2xx', async () => {
  fx.current = await coreApp(fx.db.url, { max: 3 }, { http2: true } as FastifyServerOptions)
  const { app } = fx.current
  await app.register(pgPoolMetrics)
  routes(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as { port: number }).port
  for (const path of ['/buf', '/stream', '/cursor']) {
    for (const mode of ['close', 'destroy', 'slow', 'head']) {
      const got = await new Promise<string>((resolve) => {
        const session = http2.connect(`http://127.0.0.1:${port}`)
        session.on('error', () => {})
        const stream = session.request({ ':path': path, ':method': mode === 'head' ? 'HEAD' : 'GET' })
        let n = 0
        stream.on('data', (c: Buffer) => {
          n += c.length
          if (mode === 'slow') {
            stream.pause()
            setTimeout(() => stream.resume(), 2)
          }
        })
        stream.on('error', (e) => resolve(`error ${e}`))
        stream.on('end', () => {
          if (mode === 'destroy') session.destroy()
          else session.close()
          resolve(String(n))
        })
        stream.end()
      })
      expect(got).toBe(mode === 'head' ? '0' : path === '/cursor' ? '4000000' : String(SIZE))
    }
  }
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 5000)).toBe(true)
  await sleep(200)
  expect({ classes: await classes(app), rows: (await fx.notes()).length }).toEqual({
    classes: { '/buf:2xx': 4, '/stream:2xx': 4, '/cursor:2xx': 4 },
    rows: 8,
  })
})

// Round eleven, second round (attacks on its fixes) (held): a not-found reply whose response ended ends the leases nothing ended
// (request-lease.ts responseClosed): never before its stream has been read whole, in the plugin's
// context or a child's, over keep-alive pipelining and HTTP/2; a hang-up mid-stream gives the
// connection back with nothing left running.
import { once } from 'node:events'
import { connect as http2Connect } from 'node:http2'
import { Readable } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../../support/database.js'
import { listen, rawExchange } from '../../support/http.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

/** Rows of the request's own connection, read in batches while the response is written. */
function rowStream(request: FastifyRequest, n: number, delayMs = 0): Readable {
  return Readable.from(
    (async function* () {
      for await (const rows of request.db<{ i: number }[]>`select i from generate_series(1, ${n}) as i`.cursor(10)) {
        if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs))
        yield `${rows.map((row) => row.i).join('\n')}\n`
      }
      yield 'end\n'
    })(),
  )
}
const expected = (n: number) => `${Array.from({ length: n }, (_, i) => i + 1).join('\n')}\nend\n`

async function build(where: 'root' | 'child', applicationName: string, delayMs = 0, http2 = false) {
  const app: FastifyInstance = (http2 ? Fastify({ http2: true } as never) : Fastify()) as FastifyInstance
  let pool: { stats(): { leased: number } } | undefined
  const plugin = async (api: FastifyInstance) => {
    await api.register(pgPoolCore, {
      connection: db.url,
      pool: { max: 1, acquireTimeout: 3_000, applicationName, pgbouncer: db.viaBouncer },
    })
    pool = api.pgPool
    api.get('/missing/:n', async (request, reply) => {
      await request.db`select 1`
      return reply.callNotFound()
    })
    api.get('/ok', async (request) => (await request.db`select 1 as one`)[0])
  }
  const notFound = (
    request: FastifyRequest,
    reply: { code(n: number): { type(t: string): { send(p: unknown): unknown } } },
  ) => {
    const n = Number((request.params as { n?: string }).n ?? 200)
    return reply
      .code(404)
      .type('text/plain')
      .send(rowStream(request, Number.isFinite(n) ? n : 200, delayMs))
  }
  if (where === 'root') {
    await plugin(app)
    app.setNotFoundHandler(notFound as never)
  } else {
    app.setNotFoundHandler(notFound as never)
    await app.register(plugin, { prefix: '/api' })
  }
  return { app, pool: () => pool as { stats(): { leased: number } } }
}

test('root: the plugin context’s 404 handler streams from request.db, two requests pipelined on one socket', async () => {
  const { app, pool } = await build('root', uniqueName('nf'))
  try {
    const base = await listen(app)
    const port = Number(new URL(base).port)
    const wire =
      'GET /missing/150 HTTP/1.1\r\nHost: x\r\n\r\n' +
      'GET /missing/120 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
    const { text, how } = await rawExchange(port, wire)
    expect(how).toBe('end')
    const bodies = text
      .split(/HTTP\/1\.1 /)
      .filter(Boolean)
      .map((part) => {
        const [head, ...rest] = part.split('\r\n\r\n')
        const chunked = rest.join('\r\n\r\n')
        // De-chunk.
        let body = ''
        let rest2 = chunked
        for (;;) {
          const nl = rest2.indexOf('\r\n')
          const size = Number.parseInt(rest2.slice(0, nl), 16)
          if (!size) break
          body += rest2.slice(nl + 2, nl + 2 + size)
          rest2 = rest2.slice(nl + 2 + size + 2)
        }
        return { status: head?.slice(0, 3), body }
      })
    expect(bodies).toEqual([
      { status: '404', body: expected(150) },
      { status: '404', body: expected(120) },
    ])
    expect(await waitFor(() => pool().stats().leased === 0, 3_000)).toBe(true)
  } finally {
    await app.close()
  }
})

test('child context: the parent’s 404 handler streams from request.db slowly; read whole, then the lease is back', async () => {
  const { app, pool } = await build('child', uniqueName('nf'), 20)
  try {
    const base = await listen(app)
    const response = await fetch(`${base}/api/missing/80`)
    expect({ status: response.status, body: await response.text() }).toEqual({ status: 404, body: expected(80) })
    expect(await waitFor(() => pool().stats().leased === 0, 3_000)).toBe(true)
    expect((await fetch(`${base}/api/ok`)).status).toBe(200)
  } finally {
    await app.close()
  }
})

test('child context: a hang-up during the parent’s 404 stream gives the connection back, nothing left running', async () => {
  const applicationName = uniqueName('nf')
  const { app, pool } = await build('child', applicationName, 200)
  try {
    const base = await listen(app)
    const controller = new AbortController()
    const response = await fetch(`${base}/api/missing/100000`, { signal: controller.signal })
    const reader = response.body?.getReader()
    await reader?.read()
    controller.abort()
    expect(await waitFor(() => pool().stats().leased === 0, 5_000)).toBe(true)
    expect(await waitFor(async () => (await db.running(applicationName, '%generate_series%')) === 0, 5_000)).toBe(true)
    expect((await fetch(`${base}/api/ok`)).status).toBe(200)
  } finally {
    await app.close()
  }
})

test('HTTP/2, child context: the parent’s 404 stream from request.db is read whole, then the lease is back', async () => {
  const { app, pool } = await build('child', uniqueName('nf'), 10, true)
  try {
    const base = await listen(app)
    const client = http2Connect(base)
    try {
      const stream = client.request({ ':path': '/api/missing/60' })
      let body = ''
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => {
        body += chunk
      })
      const [headers] = (await once(stream, 'response')) as [Record<string, unknown>]
      await once(stream, 'end')
      expect({ status: headers[':status'], body }).toEqual({ status: 404, body: expected(60) })
      expect(await waitFor(() => pool().stats().leased === 0, 3_000)).toBe(true)
    } finally {
      client.close()
    }
  } finally {
    await app.close()
  }
})

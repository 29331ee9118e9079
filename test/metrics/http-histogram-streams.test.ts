// Held attacks from hostile probing (round 8, observability): is every request counted exactly once in the HTTP histogram when
// the client hangs up in the middle of a streamed response (cursor, COPY), GET or POST?
import { request as httpRequest } from 'node:http'
import { Readable } from 'node:stream'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'
import { parseExposition } from './exposition.js'

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

const BIG = `copy (select i, repeat('x', 300) from generate_series(1, 400000) i) to stdout`

function readSomeThenHangUp(url: string, bytes: number, method = 'GET'): Promise<number> {
  return new Promise((resolve) => {
    const body = method === 'POST' ? JSON.stringify({ a: 1 }) : undefined
    const req = httpRequest(url, {
      agent: false,
      method,
      headers: body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {},
    })
    req.on('response', (res) => {
      let n = 0
      res.on('data', (chunk: Buffer) => {
        n += chunk.length
        if (n > bytes) {
          req.destroy()
          resolve(n)
        }
      })
      res.on('end', () => resolve(-1))
    })
    req.on('error', () => resolve(-2))
    req.on('close', () => resolve(-3))
    req.end(body)
  })
}

describe('hang-ups in the middle of a streamed response', () => {
  test('COPY and cursor streams, GET and POST: each request observed once, as aborted', async () => {
    const t = await coreApp(db.url, { max: 2, acquireTimeout: 5_000 })
    app = t.app
    await t.app.register(pgPoolMetrics)
    t.app.get('/copy', async (request) => request.db.unsafe(BIG).readable())
    t.app.post('/copy', async (request) => request.db.unsafe(BIG).readable())
    const cursorStream = (request: FastifyRequest) => {
      const iterator = request.db<{ i: number; pad: string }[]>`
        select i, repeat('y', 300) as pad from generate_series(1, 400000) i`.cursor(500)
      return Readable.from(
        (async function* () {
          for await (const rows of iterator) yield `${rows.map((r) => `${r.i} ${r.pad}`).join('\n')}\n`
        })(),
      )
    }
    t.app.get('/cursor', async (request) => cursorStream(request))
    t.app.post('/cursor', async (request) => cursorStream(request))
    const base = await listen(t.app)

    const got = [
      await readSomeThenHangUp(`${base}/copy`, 200_000),
      await readSomeThenHangUp(`${base}/copy`, 200_000, 'POST'),
      await readSomeThenHangUp(`${base}/cursor`, 200_000),
      await readSomeThenHangUp(`${base}/cursor`, 200_000, 'POST'),
    ]
    expect(got.every((n) => n > 200_000)).toBe(true)
    expect(await waitFor(() => t.app.pgPool.stats().leased === 0, 10_000)).toBe(true)
    await sleep(200)
    const m = parseExposition((await t.app.pgPoolMetrics.scrape()).body)
    const counts = (route: string, method: string) =>
      Object.fromEntries(
        m
          .find('pg_pool_http_request_duration_seconds_count', { route, method })
          .filter((s) => s.value > 0)
          .map((s) => [s.labels.status_class, s.value]),
      )
    expect({
      'GET /copy': counts('/copy', 'GET'),
      'POST /copy': counts('/copy', 'POST'),
      'GET /cursor': counts('/cursor', 'GET'),
      'POST /cursor': counts('/cursor', 'POST'),
    }).toEqual({
      'GET /copy': { aborted: 1 },
      'POST /copy': { aborted: 1 },
      'GET /cursor': { aborted: 1 },
      'POST /cursor': { aborted: 1 },
    })
    expect(m.value('pg_pool_lease_seconds_count', { route: '/copy' })).toBe(2)
    expect(m.value('pg_pool_lease_seconds_count', { route: '/cursor' })).toBe(2)
  })
})

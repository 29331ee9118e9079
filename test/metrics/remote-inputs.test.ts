import { spawnSync } from 'node:child_process'
import { connect } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'

import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'

// Held attacks from hostile probing (round 8, remote clients) against /metrics, as the umbrella README builds the app (health, metrics,
// backpressure on). packages/metrics/README.md: `pg_pool_http_request_duration_seconds` is the
// "HTTP request duration", `route` "`unmatched` for every URL no route matched"; "No label ever
// holds a URL"; "The output passes `promtool check metrics`".

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

async function umbrellaApp(): Promise<{ app: FastifyInstance; base: string; port: number }> {
  const created = Fastify()
  await created.register(pgPool, { connection: db.url, pool: { max: 2, acquireTimeout: 2_000 } })
  created.get('/items/:id', async (request) => {
    const [row] = await request.db`select ${(request.params as { id: string }).id}::int as id`
    return row
  })
  created.post('/items', { config: { db: { transaction: true } } }, async (request) => {
    const [row] = await request.db`select 1 as id`
    return row
  })
  app = created
  const base = await listen(created)
  return { app: created, base, port: Number(new URL(base).port) }
}

/** One raw HTTP/1.1 request; resolves with the status line. */
function rawRequest(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let out = ''
    socket.on('data', (chunk) => {
      out += chunk
      if (out.includes('\r\n\r\n')) {
        socket.destroy()
        resolve(out.split('\r\n')[0] as string)
      }
    })
    socket.on('error', () => resolve(out.split('\r\n')[0] ?? 'error'))
    socket.on('close', () => resolve(out.split('\r\n')[0] ?? 'closed'))
    socket.write(text)
  })
}

describe('a 404 flood, odd methods, bodies and query strings: bounded labels, valid exposition', () => {
  test('promtool accepts the text; no URL, query or header value in any label; pool idle after', async () => {
    const { app: server, base, port } = await umbrellaApp()
    const marker = 'zq-marker'
    const statuses = new Map<string, number>()
    const bump = (s: string) => statuses.set(s, (statuses.get(s) ?? 0) + 1)
    for (let i = 0; i < 40; i++) {
      bump(
        (
          await rawRequest(port, `GET /${marker}-${i}/${'x'.repeat(i * 50)}?${marker}=${i} HTTP/1.1\r\nHost: x\r\n\r\n`)
        ).split(' ')[1] ?? '',
      )
    }
    const odd = [
      `PROPFIND /items/1 HTTP/1.1\r\nHost: x\r\n\r\n`,
      `OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n`,
      `GET * HTTP/1.1\r\nHost: x\r\n\r\n`,
      `GET http://${marker}.example/items/1?${marker}=1 HTTP/1.1\r\nHost: x\r\n\r\n`,
      `HEAD /items/1 HTTP/1.1\r\nHost: x\r\n\r\n`,
      `GET /metrics?${marker}=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n{{{`,
      `GET /health?${marker}=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n{{{`,
      `POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}`,
      `DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n`,
      `POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n{{{`,
      `POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: text/${marker}\r\nContent-Length: 3\r\n\r\nabc`,
      `GET /items/1 HTTP/1.1\r\nHost: x\r\nUser-Agent: ${marker}\r\nX-Forwarded-For: ${marker}\r\n\r\n`,
      `GET /items/${marker} HTTP/1.1\r\nHost: x\r\n\r\n`,
    ]
    for (const text of odd) bump((await rawRequest(port, text)).split(' ')[1] ?? '')
    expect(statuses.get('500') ?? 0).toBe(0)
    await waitUntil(() => server.pgPool.stats().leased === 0, 'every lease back', 5_000)
    for (const accept of [undefined, 'application/openmetrics-text; version=1.0.0']) {
      const response = await fetch(`${base}/metrics`, { headers: accept ? { accept } : {} })
      const text = await response.text()
      expect(text).not.toContain(marker)
      expect(text).not.toContain('xxxxxxxxxx')
      if (accept === undefined) {
        const result = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })
        expect(`${result.stdout}${result.stderr}`).toBe('')
      } else {
        expect(text.endsWith('# EOF\n')).toBe(true)
      }
    }
  })
})

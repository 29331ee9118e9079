// Found by hostile probing (round ten, the newest code): an HTTP/1.1 client pipelined two POSTs on
// one keep-alive socket and hung up while both handlers ran. The second's response, queued behind
// the first's, had no socket and never closed; its body was read, so Node did not mark it aborted
// and Fastify ran no onRequestAbort: its route transaction committed for a client that was gone,
// it was counted nowhere, and a cursor streamed as its payload held its connection until
// app.close(). Both tests failed before the fix: the socket's close is watched for a queued response.
import { connect } from 'node:net'
import { Readable } from 'node:stream'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import type { FastifyInstance } from 'fastify'
import { describe, expect, test } from 'vitest'
import { parseExposition } from '../metrics/exposition.js'
import { coreApp } from '../support/app.js'
import { sleep, waitFor, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const
const body = '{"a":1}'
const post = (path: string) =>
  `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`

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

describe('a hang-up with POSTs pipelined on one socket', () => {
  test('both route transactions mid-handler when the client hangs up: both rolled back, both counted aborted', async () => {
    fx.current = await coreApp(fx.db.url, { max: 3 })
    const { app } = fx.current
    await app.register(pgPoolMetrics)
    const entered: string[] = []
    let release!: () => void
    const hold = new Promise<void>((resolve) => {
      release = resolve
    })
    app.post('/tx/:n', tx, async (request) => {
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
    socket.write(post('/tx/a') + post('/tx/b'))
    await waitUntil(() => entered.length === 2, 'both handlers', 10_000)
    socket.destroy()
    await sleep(200)
    release()
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    await sleep(100)
    expect({ rows: await notes(), metrics: await classes(app) }).toEqual({
      rows: [],
      metrics: { '/tx/:n:aborted': 2 },
    })
  })

  test('the second streams a cursor on a route without a transaction: its lease comes back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 2, closeTimeout: 500 })
    const { app } = fx.current
    let entered = 0
    let release!: () => void
    const hold = new Promise<void>((resolve) => {
      release = resolve
    })
    app.post('/a', async (request) => {
      await request.db`select 1`
      entered++
      await hold
      return { a: 1 }
    })
    app.post('/b', async (request) => {
      const cursor = request.db`select i from generate_series(1, 50) i`.cursor(10)
      entered++
      return Readable.from(
        (async function* () {
          for await (const rows of cursor) yield `${rows.length}\n`
        })(),
      )
    })
    const port = Number(new URL(await listen(app)).port)
    const socket = connect(port, '127.0.0.1')
    socket.on('error', () => {})
    socket.write(post('/a') + post('/b'))
    await waitUntil(() => entered === 2, 'both handlers', 10_000)
    await sleep(200)
    socket.destroy()
    await sleep(200)
    release()
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
  })
})

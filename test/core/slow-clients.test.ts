import { connect, type Socket } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'

// Held attacks from hostile probing (round 8, remote clients): slowloris-style partial requests against the umbrella app, pool max 2.
// A lease is taken on the first use of request.db (core README), so clients that trickle their
// headers or body, or never send the body they announced (Expect: 100-continue included), hold
// no connection: the other requests are served, and the probes answer.

let db: TestDatabase
let app: FastifyInstance | undefined
const sockets: Socket[] = []
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table t (id serial primary key, v text)`
})
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy()
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

function partial(port: number, text: string): Socket {
  const socket = connect(port, '127.0.0.1')
  socket.on('error', () => {})
  socket.write(text)
  sockets.push(socket)
  return socket
}

describe('partial requests hold no lease', () => {
  test('ten slow clients on a pool of 2: full requests still served, nothing written for the partial ones', async () => {
    const server = Fastify()
    await server.register(pgPool, { connection: db.url, pool: { max: 2, acquireTimeout: 2_000 } })
    server.post('/t', { config: { db: { transaction: true } } }, async (request) => {
      const [row] = await request.db`insert into t (v) values (${(request.body as { v: string }).v}) returning id`
      return row
    })
    server.put('/t', async (request) => {
      const [row] = await request.db`insert into t (v) values (${(request.body as { v: string }).v}) returning id`
      return row
    })
    app = server
    const base = await listen(server)
    const port = Number(new URL(base).port)
    const json = (v: string) => JSON.stringify({ v })
    for (let i = 0; i < 3; i++) partial(port, `POST /t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n`)
    for (let i = 0; i < 3; i++)
      partial(
        port,
        `POST /t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"v":"partial`,
      )
    for (let i = 0; i < 2; i++)
      partial(
        port,
        `PUT /t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"v":\r\n`,
      )
    for (let i = 0; i < 2; i++)
      partial(
        port,
        `POST /t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n`,
      )
    await new Promise((resolve) => setTimeout(resolve, 300))
    const served = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        fetch(`${base}/t`, {
          method: i % 2 ? 'PUT' : 'POST',
          headers: { 'content-type': 'application/json' },
          body: json(`full-${i}`),
        }).then((r) => r.status),
      ),
    )
    expect(served).toEqual([200, 200, 200, 200, 200, 200])
    expect((await fetch(`${base}/health/ready`)).status).toBe(200)
    expect(server.pgPool.stats().leased).toBe(0)
    // The partial clients hang up: nothing of theirs was written.
    for (const socket of sockets.splice(0)) socket.destroy()
    await waitUntil(() => server.pgPool.stats().leased === 0, 'idle', 5_000)
    const rows = await db.sql`select v from t order by v`
    expect(rows.map((r) => r.v)).toEqual(['full-0', 'full-1', 'full-2', 'full-3', 'full-4', 'full-5'])
  })
})

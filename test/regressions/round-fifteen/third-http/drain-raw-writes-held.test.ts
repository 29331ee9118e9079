// What the user does: answers some routes on reply.raw (reply.hijack() then writeHead/end, or
// writeHead on a reply Fastify still owns), or serves HTTP/1.0 clients asking keep-alive (an
// old proxy, ab -k), and closes the app (a rollout) while such requests are in flight.
// What they should get: each in-flight response answered in full, saying `Connection: close`
// since the server closes the connection right after it (round fifteen's drain), whoever wrote
// the head.
// Held: these pass.
import { connect } from 'node:net'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../../support/database.js'
import { listen } from '../../../support/http.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

function exchange(port: number, wire: string) {
  const socket = connect(port, '127.0.0.1')
  const state = { text: '', ended: false }
  socket.on('data', (chunk: Buffer) => {
    state.text += chunk.toString('latin1')
  })
  socket.on('error', () => {})
  socket.on('close', () => {
    state.ended = true
  })
  socket.write(wire)
  return state
}

test('in-flight hijacked, raw and HTTP/1.0 keep-alive responses say close at app.close()', {
  timeout: 30_000,
}, async () => {
  const { app } = await coreApp(db.url, { max: 4 })
  let release: () => void = () => {}
  const gate = new Promise<void>((resolve) => {
    release = resolve
  })
  let entered = 0
  app.get('/hijacked', async (request, reply) => {
    await request.db`select 1`
    entered++
    reply.hijack()
    await gate
    reply.raw.writeHead(200, { 'content-type': 'text/plain', 'content-length': '8' })
    reply.raw.end('hijacked')
  })
  app.get('/raw', { config: { db: false } }, async (_request, reply) => {
    entered++
    await gate
    reply.raw.writeHead(
      200,
      [
        ['content-type', 'text/plain'],
        ['content-length', '3'],
      ].flat(),
    )
    reply.raw.end('raw')
    return reply
  })
  app.get('/plain', async (request) => {
    await request.db`select 1`
    entered++
    await gate
    return { plain: true }
  })
  const port = Number(new URL(await listen(app)).port)
  const hijacked = exchange(port, 'GET /hijacked HTTP/1.1\r\nHost: x\r\n\r\n')
  const raw = exchange(port, 'GET /raw HTTP/1.1\r\nHost: x\r\n\r\n')
  const old = exchange(port, 'GET /plain HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n')
  await waitUntil(() => entered === 3, 'the three requests in their handlers', 10_000)
  const closed = app.close()
  await new Promise((resolve) => setTimeout(resolve, 100))
  release()
  await waitUntil(() => hijacked.ended && raw.ended && old.ended, 'the three connections to end', 15_000)
  await closed
  for (const [state, body] of [
    [hijacked, 'hijacked'],
    [raw, 'raw'],
    [old, '{"plain":true}'],
  ] as const) {
    const [head = '', rest] = state.text.split('\r\n\r\n')
    expect(head).toMatch(/^HTTP\/1\.[01] 200 OK/)
    expect(rest).toBe(body)
    expect(head).toMatch(/^connection: close$/im)
    expect(head).not.toMatch(/^keep-alive:/im)
  }
})

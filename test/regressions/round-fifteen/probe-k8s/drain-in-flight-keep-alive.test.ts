// What the user does: runs the example app (examples/basic/src/server.js) behind a load balancer
// that keeps HTTP/1.1 connections alive (an ingress controller's upstream keepalive, an ALB, a
// Node agent of another service) and rolls the Deployment: SIGTERM arrives while a request is in
// flight on such a connection.
// What they should get: the in-flight request finishes (200), and its response says
// `Connection: close`, since the server closes that connection right after it: the load balancer
// then does not put the connection back in its pool and send the next request into a socket
// being closed (a 502 / "socket hang up" for a request the app never saw).
// What they got: the response says `Connection: keep-alive` and `Keep-Alive: timeout=72`, and
// the server closes the connection milliseconds later (the drain's idle sweep).
// Held beside it: two requests pipelined on one connection, both in flight at SIGTERM, are both
// answered (only the last response may say close: an earlier one saying it would end the
// connection before the later one, whose handler runs all the same, is sent).
import { connect } from 'node:net'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../../../support/database.js'
import { type ExampleProcess, get, startExample } from './kubelet-kit.js'

let db: TestDatabase
let app: ExampleProcess | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  app?.kill()
  await db?.drop()
})

/** A load balancer's kept-alive connection, read raw. */
function keptAlive(port: number) {
  const socket = connect(port, '127.0.0.1')
  const state = { text: '', ended: false }
  socket.on('data', (chunk: Buffer) => {
    state.text += chunk.toString('latin1')
  })
  socket.on('error', () => {})
  socket.on('close', () => {
    state.ended = true
  })
  return { socket, state }
}

const sleeping = async () =>
  (
    await db.sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where state = 'active' and query like '%pg_sleep%' and pid <> pg_backend_pid()`
  )[0]?.n ?? 0

test('a response finished during the drain closes its kept-alive connection: Connection: close', {
  timeout: 60_000,
}, async () => {
  app = await startExample(db.url)
  const example = app
  await waitUntil(
    async () => (await get(example.port, '/health/live', { timeoutMs: 1_000 })).status === 200,
    'the app to listen',
    20_000,
  )

  const lb = keptAlive(example.port)
  lb.socket.write('GET /slow?ms=4000 HTTP/1.1\r\nHost: demo\r\n\r\n')
  await waitUntil(async () => (await sleeping()) === 1, 'the request to run its query', 10_000)

  example.child.kill('SIGTERM')
  // close() began: the server stopped listening (a new connection is refused).
  await waitUntil(
    async () => (await get(example.port, '/health/live', { timeoutMs: 1_000 })).status === 'ECONNREFUSED',
    'the server to stop listening',
    10_000,
  )
  expect(lb.state.text, 'the in-flight request has not been answered yet').toBe('')

  await waitUntil(() => lb.state.text.includes('"slept"'), 'the in-flight response', 15_000)
  await waitFor(() => lb.state.ended, 5_000)
  const head = lb.state.text.split('\r\n\r\n')[0] ?? ''
  expect(head.split('\r\n')[0]).toBe('HTTP/1.1 200 OK')
  // The server closed the connection right after this response...
  expect(lb.state.ended).toBe(true)
  // ...so the response must say so.
  expect(head).toMatch(/^connection: close$/im)
  expect(head).not.toMatch(/^keep-alive:/im)
  expect(await example.exited).toEqual({ code: 0, signal: null })
})

test('two requests pipelined on one connection, in flight at SIGTERM: both answered, the last says close', {
  timeout: 60_000,
}, async () => {
  app = await startExample(db.url)
  const example = app
  await waitUntil(
    async () => (await get(example.port, '/health/live', { timeoutMs: 1_000 })).status === 200,
    'the app to listen',
    20_000,
  )
  const lb = keptAlive(example.port)
  lb.socket.write('GET /slow?ms=3000 HTTP/1.1\r\nHost: demo\r\n\r\nGET /slow?ms=2000 HTTP/1.1\r\nHost: demo\r\n\r\n')
  await waitUntil(async () => (await sleeping()) === 2, 'both requests to run their queries', 10_000)
  example.child.kill('SIGTERM')
  await waitUntil(() => lb.state.ended, 'the connection to end', 20_000)
  const heads = lb.state.text.split(/\r\n\r\n\{[^}]*\}/).filter((head) => head !== '')
  expect(heads.map((head) => head.split('\r\n')[0])).toEqual(['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK'])
  expect(lb.state.text).toContain('{"slept":3000}')
  expect(lb.state.text).toContain('{"slept":2000}')
  expect(heads[0]).not.toMatch(/^connection: close$/im)
  expect(heads[1]).toMatch(/^connection: close$/im)
  expect(await example.exited).toEqual({ code: 0, signal: null })
})

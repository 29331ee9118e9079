import { type Socket, connect as tcpConnect } from 'node:net'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'

// Found by hostile probing of slow clients (failed before the fix): a client that sends a GET and
// never reads the streamed reply. No handlerTimeout; statementTimeout 1 s ("the client also
// abandons a statement 1 s past it and closes its connection"). Before the fix the connection was
// given up, but postgres.js's end only half-closes a socket, which stayed paused: the backend went
// on waiting to write (ClientWrite) outside the pool. (A streamed cursor to such a client keeps its
// lease until the stream is sent, the client leaves or handlerTimeout: documented in the README.)

let db: TestDatabase
let current: TestApp | undefined
const sockets: Socket[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy()
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

function pausedGet(base: string, path: string): Socket {
  const socket = tcpConnect(Number(new URL(base).port), '127.0.0.1')
  socket.on('error', () => {})
  socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`)
  socket.pause()
  sockets.push(socket)
  return socket
}

describe('a paused reader, no handlerTimeout, statementTimeout 1 s', () => {
  test('COPY TO STDOUT payload: once the deadline gives the connection up, its backend is gone too (not left in ClientWrite)', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 2_000, statementTimeout: 1_000 })
    const { app, applicationName } = current
    app.get('/copy', async (request, reply) => {
      reply.type('text/plain')
      return request.db
        .unsafe("copy (select i, repeat('x', 500) from generate_series(1, 3000000) i) to stdout")
        .readable()
    })
    app.get('/next', async (request) => (await request.db`select 1 as one`)[0])
    const base = await listen(app)
    pausedGet(base, '/copy')
    await waitUntil(() => app.pgPool.stats().leased === 1, 'the COPY to lease', 5_000)
    // The client-side deadline (statementTimeout + 1 s) closes the connection: the pool counts it gone.
    expect(await waitFor(() => app.pgPool.stats().open === 0 && app.pgPool.stats().leased === 0, 8_000)).toBe(true)
    const backends = () =>
      db.admin<{ state: string; wait_event: string | null }[]>`select state, wait_event from pg_stat_activity
        where application_name = ${applicationName}`
    const gone = await waitFor(async () => (await backends()).length === 0, 5_000)
    const left = await backends()
    // The pool, counting no connection, opens another: max 1, two backends on the server.
    expect((await app.inject('/next')).json()).toEqual({ one: 1 })
    const total = (await backends()).length
    // And app.close() does not end it either.
    await app.close()
    current = undefined
    const goneAfterClose = await waitFor(async () => (await backends()).length === 0, 3_000)
    // Observed: left [{ state: 'active', wait_event: 'ClientWrite' }], total 2, goneAfterClose false.
    expect({ gone, left, total, goneAfterClose }).toEqual({ gone: true, left: [], total: 1, goneAfterClose: true })
  })

  test('COPY TO STDOUT payload to a paused reader with handlerTimeout 1 s: lease back, backend gone (intermittent)', async () => {
    current = await coreApp(db.url, { max: 1, acquireTimeout: 2_000, statementTimeout: 20_000 })
    const { app, applicationName } = current
    app.get('/copy', { handlerTimeout: 1_000 }, async (request, reply) => {
      reply.type('text/plain')
      return request.db
        .unsafe("copy (select i, repeat('x', 500) from generate_series(1, 3000000) i) to stdout")
        .readable()
    })
    const base = await listen(app)
    pausedGet(base, '/copy')
    await waitUntil(() => app.pgPool.stats().leased === 1, 'the COPY to lease', 5_000)
    const back = await waitFor(() => app.pgPool.stats().leased === 0, 8_000)
    const gone = await waitFor(async () => {
      const [row] = await db.admin<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
        where application_name = ${applicationName} and state <> 'idle'`
      return row?.n === 0
    }, 5_000)
    expect({ back, gone }).toEqual({ back: true, gone: true })
  })
})

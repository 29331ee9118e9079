// DEFECT (probe-storm, low). What the user does: runs the umbrella (health and the core's shutdown
// handling) behind clients that open a connection before they send on it (a browser's preconnect, a
// load balancer's or an HTTP agent's warm connection; Node's own fetch leaves one after a request it
// aborted before writing it: found by the replica storm, where close() then hung past 50 s), and on
// SIGTERM calls app.close().
// What they see: app.close() does not end while that client keeps its connection open (8 s here with
// closeTimeout 1 s; with fetch's sockets up to its keep-alive timeout, or for good with a client that
// waits for the server), past the pod's grace period.
// What they should see: health README, "Graceful shutdown": the core closes the HTTP/1.1
// connections that turn idle once Fastify stopped listening, and "terminationGracePeriodSeconds must
// exceed the sum: preStop sleep + closeTimeout": a connection with no request in flight is idle.
// Cause: packages/core/src/plugin.ts:399-403 relies on server.closeIdleConnections(), which in Node
// (20.x here) skips a connection that has not sent a request yet; plain Fastify behaves the same
// (forceCloseConnections 'idle'), so the gap is the suite's promise, not Fastify's. Suggested fix:
// track the server's sockets ('connection' / 'request' events) and, once the server stopped
// listening, destroy those with no request in flight (never carried one, or their last response
// finished), beside closeIdleConnections().
// Round thirteen: failed on 47cd02d (both servers, probe-storm); passes after 17975c0.
import { connect, type Socket } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase } from '../../support/database.js'
import { listen } from '../../support/http.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

async function closeWithin(app: FastifyInstance, ms: number): Promise<number | 'still open'> {
  const started = Date.now()
  const closed = app.close().then(() => Date.now() - started)
  return Promise.race([closed, sleep(ms).then(() => 'still open' as const)])
}

describe('app.close() with a client connection that has sent no request yet', () => {
  for (const kind of ['with fastify-pg-pool'] as const) {
    test(kind, async () => {
      const app = Fastify()
      await app.register(pgPool, { connection: db.url, pool: { max: 2, closeTimeout: 1_000 }, backpressure: false })
      app.get('/x', async () => ({ ok: true }))
      const base = await listen(app)
      const port = Number(new URL(base).port)
      const socket: Socket = connect(port, '127.0.0.1')
      await new Promise((resolve) => socket.once('connect', resolve))
      await sleep(50)
      // closeTimeout is 1 s: 8 s is a huge bound (the client here never closes: a real one closes
      // its idle socket after its own keep-alive timeout, if ever). Seen: 'still open'.
      const outcome = await closeWithin(app, 8_000)
      socket.destroy()
      await app.close()
      expect({ closedWithinMs: outcome }).toEqual({ closedWithinMs: expect.any(Number) })
    })
  }
})

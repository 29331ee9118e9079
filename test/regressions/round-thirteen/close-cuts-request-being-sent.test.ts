// DEFECT (third-a, medium). What the user does: closes the app (`app.close()` on SIGTERM, a
// rolling deploy) while a client's request is on its way: its connection is open and the first
// bytes of its head arrived (a slow mobile link, a large header set, a request split over TCP
// segments), the rest comes 300 ms later.
// What they see: about 50 ms after the server stopped listening the pool destroys the connection:
// the client's request, half sent, ends in ECONNRESET / a closed socket and no answer. A POST
// client cannot tell it was not run (a reset after sending is ambiguous). Plain Fastify (Node's
// server.close() does not close a connection whose request has begun) reads the rest of the head
// and answers it (a coded 503 with `Connection: close` while closing), which a client can retry.
// What they should see: as without the pool, the request read and answered (a 503 while
// closing), not a reset; HttpDrain's own comment says it tracks connections "from their first
// byte", but it destroys those that have sent bytes too.
// Cause: packages/core/src/http-drain.ts:27-30 adds every socket on 'connection' and
// http-drain.ts:41 destroys all of those without a 'request' yet, whatever they received.
// Suggested fix: take a socket off `#unused` on its first 'data' (or destroy only sockets whose
// `bytesRead` is 0), leaving begun requests to Node and to closeTimeout.
// Round thirteen, third round: failed on 381590e (both servers); passes after its fix.
import { once } from 'node:events'
import net from 'node:net'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})

/** What a client whose head is split across app.close() receives (its status line), or how it ended. */
async function halfSentDuringClose(withPool: boolean): Promise<string> {
  const app: FastifyInstance = Fastify()
  if (withPool) await app.register(pgPoolCore, { connection: db.url, pool: { max: 2 } })
  app.post('/orders', async () => ({ ok: true }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const client = net.connect(port, '127.0.0.1')
  let outcome = ''
  client.on('error', (error: NodeJS.ErrnoException) => {
    outcome ||= error.code ?? error.message
  })
  await once(client, 'connect')
  let received = ''
  client.on('data', (chunk: Buffer) => {
    received += chunk.toString()
  })
  client.write('POST /orders HTTP/1.1\r\nHost: x\r\n')
  await new Promise((resolve) => setTimeout(resolve, 50))
  const closing = app.close()
  await new Promise((resolve) => setTimeout(resolve, 300))
  client.write('Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}')
  // 5 s: a hang, not a timing measure.
  await Promise.race([once(client, 'close'), new Promise((resolve) => setTimeout(resolve, 5_000).unref())])
  client.destroy()
  await closing
  return received === '' ? `no answer ${outcome}` : (received.split('\r\n')[0] ?? '')
}

test('a request whose head is arriving when the app closes is answered, not reset', async () => {
  const plain = await halfSentDuringClose(false)
  expect(plain, 'plain Fastify').toMatch(/^HTTP\/1\.1 [25]0\d /)
  expect(await halfSentDuringClose(true), 'with the pool').toBe(plain)
})

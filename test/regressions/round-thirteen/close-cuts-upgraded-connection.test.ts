// DEFECT (third-a, medium). What the user does: an app with the pool that also serves an upgraded
// connection (`app.server.on('upgrade', ...)`: a WebSocket library, a proxy's tunnel, any 101
// protocol) and closes (`app.close()` on SIGTERM) while such a connection is doing work: a
// message it received is being processed and its answer is still to be written.
// What they see: about 50 ms after the server stops listening, the pool destroys the connection
// (the client sees the socket end without its answer; a WebSocket's 1006), though Node's
// server.close() waits for it and plain Fastify delivers the answer. HttpDrain tracks it as a
// connection "that never carried a request", because an upgrade request emits 'upgrade', never
// 'request'.
// What they should see: an upgraded connection left to the app (as Node and Fastify leave it), or
// at least closed no earlier than closeTimeout, like a request in flight.
// Cause: packages/core/src/http-drain.ts:31-33 takes a socket off `#unused` on 'request' only;
// http-drain.ts:41 destroys every socket still in it. Suggested fix: also take it off on
// 'upgrade' (and on 'connect', the CONNECT method's event).
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

/**
 * An app whose upgraded connections answer each line after 400 ms of work, then end; what the
 * client received once the app closed (its close() called as soon as the line arrived).
 */
async function answerDuringClose(withPool: boolean): Promise<string> {
  const app: FastifyInstance = Fastify()
  if (withPool) await app.register(pgPoolCore, { connection: db.url, pool: { max: 2 } })
  app.get('/', async () => 'ok')
  let closing: Promise<void> | undefined
  app.server.on('upgrade', (_request, socket: net.Socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: lines\r\nConnection: Upgrade\r\n\r\n')
    socket.on('data', (line: Buffer) => {
      closing ??= app.close()
      setTimeout(() => socket.end(`done: ${line.toString().trim()}\n`), 400)
    })
    socket.on('error', () => {})
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const client = net.connect(port, '127.0.0.1')
  client.on('error', () => {})
  await once(client, 'connect')
  client.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: lines\r\n\r\n')
  let received = ''
  client.setEncoding('utf8')
  client.on('data', (chunk: string) => {
    received += chunk
    if (received.includes('\r\n\r\n') && !received.includes('sent')) {
      received += 'sent\n'
      client.write('job 1\n')
    }
  })
  // 5 s: a hang, not a timing measure.
  await Promise.race([once(client, 'close'), new Promise((resolve) => setTimeout(resolve, 5_000).unref())])
  client.destroy()
  await closing
  return received.slice(received.indexOf('\r\n\r\n') + 4)
}

test('app.close() leaves an upgraded connection to finish its answer, as plain Fastify does', async () => {
  // Without the pool: Node's server.close() waits for the connection, the answer arrives.
  expect(await answerDuringClose(false), 'plain Fastify').toBe('sent\ndone: job 1\n')
  expect(await answerDuringClose(true), 'with the pool').toBe('sent\ndone: job 1\n')
})

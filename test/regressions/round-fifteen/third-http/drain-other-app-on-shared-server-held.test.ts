// What the user does: serves two Fastify apps from one HTTP server of their own (serverFactory:
// a server dispatching /a/ to one app and everything else to another), and closes the one that
// registered the core while it still has a request in flight; the server keeps listening and the
// other app keeps serving.
// What they should get: the other app's responses say `Connection: keep-alive` as they did, so
// its clients keep their connections (the drain is one per server).
// Held: Fastify runs onClose at once for an app that did not listen on its server, so the drain's
// stop() follows its start() within a few ticks.
import { Agent, createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../../support/database.js'

let db: TestDatabase
const server: Server = createServer()
const handlers: {
  a?: (q: IncomingMessage, s: ServerResponse) => void
  b?: (q: IncomingMessage, s: ServerResponse) => void
} = {}
server.on('request', (req: IncomingMessage, res: ServerResponse) => {
  const handler = req.url?.startsWith('/a/') ? handlers.a : handlers.b
  handler?.(req, res)
})

beforeAll(async () => {
  db = await createTestDatabase()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
})
afterAll(async () => {
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
  await db.drop()
})

/** One request on a kept-alive connection of its own: its status and Connection header. */
const get = (path: string) =>
  new Promise<{ status: number | undefined; connection: string | undefined }>((resolve, reject) => {
    const agent = new Agent({ keepAlive: true })
    const port = (server.address() as AddressInfo).port
    request({ host: '127.0.0.1', port, path, agent }, (response) => {
      response.resume()
      response.on('end', () => {
        agent.destroy()
        resolve({ status: response.statusCode, connection: response.headers.connection })
      })
    })
      .on('error', reject)
      .end()
  })

test('while one app on a shared server closes, the other app’s responses keep their connections', {
  timeout: 30_000,
}, async () => {
  let release: () => void = () => {}
  const gate = new Promise<void>((resolve) => {
    release = resolve
  })
  let entered = false
  const a: TestApp = await coreApp(
    db.url,
    { max: 1 },
    {
      serverFactory: (handler) => {
        handlers.a = handler
        return server
      },
    },
  )
  a.app.get('/a/slow', async (req) => {
    await req.db`select 1`
    entered = true
    await gate
    return { slow: true }
  })
  await a.app.ready()
  const b: FastifyInstance = Fastify({
    serverFactory: (handler) => {
      handlers.b = handler
      return server
    },
  })
  b.get('/b', async () => ({ b: true }))
  await b.ready()
  try {
    expect(await get('/b')).toEqual({ status: 200, connection: 'keep-alive' })
    const slow = get('/a/slow')
    await waitUntil(() => entered, 'the slow request in its handler', 10_000)
    const closing = a.app.close()
    await new Promise((resolve) => setTimeout(resolve, 100))
    // A is closing (its preClose ran, its request still in flight); B serves as before.
    expect(await get('/b')).toEqual({ status: 200, connection: 'keep-alive' })
    release()
    expect((await slow).status).toBe(200)
    await closing
  } finally {
    release()
    await b.close()
  }
})

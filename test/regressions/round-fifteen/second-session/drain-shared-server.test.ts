// What the user does: the HTTP server is the app's own (`serverFactory`, listened on by the app's
// code, as for a dev server that reloads its Fastify instance, or one server shared with other
// handlers). On a reload it closes the old Fastify instance and builds the new one (the core
// registered) on the same server; the server keeps listening and serving.
// What they should get: the closing instance's drain ends with it: responses of the server after
// the reload say `Connection: keep-alive` as before (README/http-drain: "from preClose on" is a
// drain of a server that stops listening), and clients keep their connections.
// What they got: the drain is one per server and, once started, never stops saying close: every
// response of the new instance, for the rest of the process, says `Connection: close`, and every
// client (a load balancer's kept-alive pool) must open a new TCP (and TLS) connection per request.
import { Agent, createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

let db: TestDatabase
const server: Server = createServer()
let handler: (request: IncomingMessage, response: ServerResponse) => void = (_, response) => response.end()
server.on('request', (request, response) => handler(request, response))

beforeAll(async () => {
  db = await createTestDatabase()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
})
afterAll(async () => {
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
  await db.drop()
})

async function instance(name: string): Promise<TestApp> {
  const made = await coreApp(
    db.url,
    { max: 1 },
    {
      serverFactory: (h) => {
        handler = h
        return server
      },
    },
  )
  made.app.get('/who', async (request) => {
    const [row] = await request.db<{ one: number }[]>`select 1::int as one`
    return { name, one: row?.one }
  })
  await made.app.ready()
  return made
}

/** One request on a kept-alive connection of its own: its status, Connection header and body. */
const get = () =>
  new Promise<{ status: number | undefined; connection: string | undefined; body: string }>((resolve, reject) => {
    const agent = new Agent({ keepAlive: true })
    const port = (server.address() as AddressInfo).port
    request({ host: '127.0.0.1', port, path: '/who', agent }, (response) => {
      let body = ''
      response.on('data', (chunk: Buffer) => {
        body += chunk.toString()
      })
      response.on('end', () => {
        agent.destroy()
        resolve({ status: response.statusCode, connection: response.headers.connection, body })
      })
    })
      .on('error', reject)
      .end()
  })

test('after a reload on the same server, responses do not say Connection: close', async () => {
  const first = await instance('first')
  expect(await get()).toEqual({ status: 200, connection: 'keep-alive', body: '{"name":"first","one":1}' })

  await first.app.close()
  const second = await instance('second')
  try {
    expect(await get()).toEqual({ status: 200, connection: 'keep-alive', body: '{"name":"second","one":1}' })
  } finally {
    await second.app.close()
  }
})

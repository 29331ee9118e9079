import { Agent } from 'node:http'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { type ExampleServer, startExampleServer } from './example-server.js'
import { sendOk } from './support.js'

// Found by hostile probing (round ten, rollouts): after SIGTERM, examples/basic did not exit while a
// keep-alive client that had a request in flight kept its connection: Node's server.close() closes
// only the connections idle at that moment, and one idle later stays until keepAliveTimeout (72 s in
// Fastify), past the Deployment's 30 s grace period. The health plugin now answers with
// `Connection: close` from preClose on. The test failed before the fix.

let db: TestDatabase
let server: ExampleServer | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(() => {
  server?.kill()
  server = undefined
})
afterAll(() => db.drop())

describe('SIGTERM with a keep-alive client whose request is in flight', () => {
  test('the request is answered, its connection ends, and the process exits', async () => {
    server = await startExampleServer(db.url)
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    try {
      expect((await sendOk(`${server.base}/items`, { agent })).status).toBe(200)
      const inFlight = sendOk(`${server.base}/slow?ms=1000`, { agent })
      // The request holds its connection on the server: the state under test.
      await waitUntil(
        async () =>
          (
            await db.sql<{ n: number }[]>`
              select count(*)::int as n from pg_stat_activity
              where datname = current_database() and query like '%pg_sleep%' and state = 'active'
                and pid <> pg_backend_pid()`
          )[0]?.n === 1,
        'the request to run',
        10_000,
      )
      server.child.kill('SIGTERM')
      const answer = await inFlight
      expect(answer.status).toBe(200)
      // The process exits once nothing is in flight: well within the 72 s keep-alive timeout,
      // and within what the Deployment budgets (closeTimeout 10 s, the in-flight request done).
      const exited = await server.waitExit(12_000)
      expect(exited, `still running; the answer said connection: ${answer.headers.connection}`).toBe(true)
      expect(server.exited()).toEqual({ code: 0, signal: null })
    } finally {
      agent.destroy()
    }
  }, 40_000)
})

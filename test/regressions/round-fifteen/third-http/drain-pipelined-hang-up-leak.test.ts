// What the user does: runs an app with the core behind clients that pipeline HTTP/1.1 requests
// (a proxy, a load tester, a hostile client) and hang up while the first request is still being
// answered: the later response, already written by its handler, waits in Node's queue for a
// socket that is gone.
// What they should get: once the connection is gone its responses are garbage, as in a plain
// Fastify app: memory stays flat however many such connections come.
// What they got: the core's HTTP drain keeps every response it saw in a Set until it is finished
// or destroyed, and a response queued behind another on a closed connection is neither: each one
// stays in memory for good with its written body (200 hang-ups, 200 responses kept).
import { ServerResponse } from 'node:http'
import { connect } from 'node:net'
import { queryObjects } from 'node:v8'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitUntil } from '../../../support/database.js'
import { listen } from '../../../support/http.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

const alive = () => queryObjects(ServerResponse, { format: 'count' }) as number

test('responses pipelined behind one a client hung up on are not kept', { timeout: 30_000 }, async () => {
  const { app } = await coreApp(db.url, { max: 1 })
  const waiting: (() => void)[] = []
  app.get('/slow', { config: { db: false } }, () => new Promise((resolve) => waiting.push(() => resolve({ ok: 1 }))))
  app.get('/fast', { config: { db: false } }, async () => ({ body: 'x'.repeat(10_000) }))
  const url = await listen(app)
  const port = Number(new URL(url).port)
  try {
    const before = alive()
    const hangUps = 200
    for (let i = 0; i < hangUps; i++) {
      const socket = connect(port, '127.0.0.1')
      socket.on('error', () => {})
      socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n')
      await waitUntil(() => waiting.length === i + 1, 'the slow request to reach its handler', 10_000)
      await sleep(2)
      socket.destroy()
    }
    for (const release of waiting) release()
    // Ordinary traffic afterwards: the drain sweeps what it tracks as requests come.
    for (let i = 0; i < 300; i++) expect((await fetch(`${url}/fast`)).status).toBe(200)
    await sleep(100)
    // A plain Fastify app keeps none of them; the drain may hold a few finished ones until its next sweep.
    expect(alive() - before).toBeLessThan(130)
  } finally {
    await app.close()
  }
})

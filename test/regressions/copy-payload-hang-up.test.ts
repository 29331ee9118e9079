import { request as httpRequest } from 'node:http'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'
import { listen } from '../support/http.js'

// Found by hostile probing (failed before the fix): a COPY TO STDOUT returned as the payload of a GET without a transaction; the client
// reads 100 kB and hangs up. Intermittent: when Fastify's end-of-stream handler destroys the
// payload before onRequestAbort runs, abandonCopy (postgres-adapter.ts) finds the stream
// destroyed and neither reads on nor cancels; the connection is then cut with postgres.js's
// graceful end on a paused socket and the backend stays in ClientWrite. Repeated to catch it.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

function readSomeThenHangUp(url: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const req = httpRequest(url, { agent: false })
    req.on('response', (res) => {
      let n = 0
      res.on('data', (chunk: Buffer) => {
        n += chunk.length
        if (n > 100_000) {
          req.destroy()
          resolve()
        }
      })
    })
    req.on('error', () => {})
    req.end()
  })
}

test('COPY TO STDOUT payload, client hangs up mid-stream (x8): lease back and no backend left busy each time', async () => {
  current = await coreApp(db.url, { max: 1, acquireTimeout: 2_000, statementTimeout: 20_000 })
  const { app, applicationName } = current
  app.get('/copy', async (request, reply) => {
    reply.type('text/plain')
    return request.db
      .unsafe("copy (select i, repeat('x', 500) from generate_series(1, 2000000) i) to stdout")
      .readable()
  })
  const base = await listen(app)
  const busy = async () =>
    (
      await db.admin<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
        where application_name = ${applicationName} and state <> 'idle'`
    )[0]?.n ?? 0
  const outcomes: string[] = []
  for (let i = 0; i < 8; i++) {
    await readSomeThenHangUp(`${base}/copy`)
    const back = await waitFor(() => app.pgPool.stats().leased === 0, 3_000)
    const quiet = await waitFor(async () => (await busy()) === 0, 5_000)
    outcomes.push(back && quiet ? 'clean' : `back=${back} quiet=${quiet}`)
    // Clear an orphan so that the next round starts clean.
    if (!quiet) await db.terminate(applicationName)
    await waitFor(async () => (await busy()) === 0, 5_000)
  }
  expect(outcomes).toEqual(Array(8).fill('clean'))
})

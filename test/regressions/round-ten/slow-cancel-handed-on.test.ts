// What the user does: runs the core in front of a PostgreSQL whose cancel requests are slow to be
// processed (an overloaded server: the CancelRequest's bytes reach the server's host at once, the
// server reads them only 1.6 s later). A client hangs up while its statement runs; the pool sends a
// cancel request, and the statement ends right after for another reason (here an administrator's
// pg_cancel_backend, as in test/regressions/outside-cancel.test.ts). The next request waits for
// the connection.
// What they should get (packages/core/README.md, "Aborts, timeouts and cancels"): "hands the
// connection to nobody until that cancel request has ended ... A connection whose cancel request
// has not ended within `connectTimeout` is retired ... A cancel sent by the pool never reaches
// another request's statement." The next request runs on a fresh connection: 200.
// What they get: postgres.js gives the cancel request up at its own connect_timeout (the pool
// passes connectTimeout), which started when the cancel was sent, before the connection came
// back; the pool takes that give-up for the request's end (server-connection.ts cancel():
// `.then(settle, settle)`), and #afterCancel (pool.ts) hands the connection on before its own
// connectTimeout timer retires it. When the server reads the CancelRequest, it stops the next
// request's statement: a 503 with 57014 (a route transaction's work rolled back).
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../support/database.js'
import { listen, startRequest } from '../../support/http.js'
import { type SlowCancelProxy, startSlowCancelProxy } from './slow-cancel-proxy.js'

let db: TestDatabase
let proxy: SlowCancelProxy
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table victims (id serial primary key, note text)`
  proxy = await startSlowCancelProxy(Number(new URL(db.directUrl).port), new URL(db.directUrl).hostname)
})
afterEach(async () => {
  proxy.onCancel = undefined
  proxy.cancelDelayMs = 0
  await current?.app.close()
  current = undefined
  await db.sql`delete from victims`
})
afterAll(async () => {
  await proxy.close()
  await db.drop()
})

describe('a cancel request the server reads only after connectTimeout', () => {
  for (const victim of ['/victim', '/victim-tx'] as const) {
    test(`the connection is not handed to the next request, whose statement the cancel would stop (${victim})`, async () => {
      current = await coreApp(proxy.urlFor(db.directUrl), {
        max: 1,
        connectTimeout: 1_000,
        acquireTimeout: 10_000,
        pgbouncer: false,
      })
      const { app, applicationName } = current
      app.get('/pid', async (request) => (await request.db`select pg_backend_pid() as pid`)[0])
      app.get('/abandoned', async (request) => {
        await request.db`select pg_sleep(5) as abandoned`
        return 'never read'
      })
      app.get('/victim', async (request) => (await request.db`select pg_sleep(1.5) as victim, 'ok' as status`)[0])
      app.post('/victim-tx', { config: { db: { transaction: true } } }, async (request) => {
        await request.db`insert into victims (note) values ('before sleep')`
        await request.db`select pg_sleep(1.5) as victim`
        await request.db`insert into victims (note) values ('after sleep')`
        return { ok: true }
      })
      const retired: string[] = []
      app.pgPool.on('close', (reason: string) => void retired.push(reason))
      const base = await listen(app)
      const admin = postgres(db.directUrl, { max: 1, onnotice: () => {} })
      try {
        {
          const { pid } = (await (await fetch(`${base}/pid`)).json()) as { pid: number }
          await admin`select 1`
          retired.length = 0
          const cancelsBefore = proxy.cancels
          proxy.cancelDelayMs = 1_600
          // The statement ends within the pool's 50 ms grace: the connection comes back usable,
          // its cancel request still on its way.
          proxy.onCancel = () => void admin`select pg_cancel_backend(${pid})`.catch(() => {})
          const abandoned = startRequest(`${base}/abandoned`)
          await waitUntil(async () => (await db.running(applicationName, '%abandoned%')) === 1, 'the statement to run')
          abandoned.abort()
          await waitUntil(() => proxy.cancels === cancelsBefore + 1, "the pool's cancel to be sent")
          proxy.onCancel = undefined
          const result = await fetch(`${base}${victim}`, { method: victim === '/victim' ? 'GET' : 'POST' })
          const text = await result.text()
          expect({ status: result.status, cancelled: text.includes('57014') }, text).toEqual({
            status: 200,
            cancelled: false,
          })
          if (victim === '/victim-tx') {
            expect((await db.sql`select note from victims order by id`).map((r) => r.note)).toEqual([
              'before sleep',
              'after sleep',
            ])
          }
        }
      } finally {
        await admin.end({ timeout: 1 })
      }
    })
  }
})

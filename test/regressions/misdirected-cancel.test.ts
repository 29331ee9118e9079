import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'
import { isCancelRequest, startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'

// Issue 17 item 2: PostgreSQL's cancel request names a backend, not a statement, and lands
// asynchronously. Here every cancel is held 700 ms by a proxy, so it always lands after the
// statement it was meant for has finished, while the next holder's statement runs. On fd52652
// the connection went back to the pool at once and B's statement got 57014 (500).

let db: TestDatabase
let proxy: TcpProxy
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table victims (id serial primary key, note text)`
  proxy = await startTcpProxy(Number(new URL(db.url).port))
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
  proxy.clientChunkDelay = undefined
})
afterAll(async () => {
  await proxy.close()
  await db.drop()
})

async function setup(): Promise<{ base: string; cancels: () => number }> {
  current = await coreApp(proxy.urlFor(db.url), { max: 1, acquireTimeout: 10_000 })
  const { app } = current
  app.get('/abandoned', async (request) => {
    await request.db`select pg_sleep(0.4) as abandoned`
    return 'never read'
  })
  app.get('/victim', async (request) => {
    const [row] = await request.db`select pg_sleep(1.2) as victim, 'ok' as status`
    return row
  })
  app.post('/victim-tx', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into victims (note) values ('before sleep')`
    await request.db`select pg_sleep(1.2) as victim`
    await request.db`insert into victims (note) values ('after sleep')`
    return { ok: true }
  })
  let cancels = 0
  proxy.clientChunkDelay = (chunk) => {
    if (!isCancelRequest(chunk)) return 0
    cancels++
    return 700
  }
  return { base: await listen(app), cancels: () => cancels }
}

describe('a cancel sent for an abandoned statement never reaches another holder', () => {
  for (const victim of ['/victim', '/victim-tx']) {
    test(`the next holder's statement completes (${victim})`, async () => {
      const { base, cancels } = await setup()
      const { app, applicationName } = current as TestApp
      const abandoned = startRequest(`${base}/abandoned`)
      await waitUntil(async () => (await db.running(applicationName, '%abandoned%')) === 1, 'the statement to run')
      abandoned.abort()
      // The victim queues for the only connection right away.
      const response = fetch(`${base}${victim}`, { method: victim === '/victim' ? 'GET' : 'POST' })
      expect(await abandoned.done).toBe('aborted')
      const result = await response
      expect(await result.text()).not.toContain('57014')
      expect(result.status).toBe(200)
      expect(cancels()).toBe(1)
      await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
      if (victim === '/victim-tx') {
        const rows = await db.sql`select note from victims order by id`
        expect(rows.map((r) => r.note)).toEqual(['before sleep', 'after sleep'])
        await db.sql`delete from victims`
      }
    })
  }

  test('a cancel that did hit its statement (57014 seen) leaves the connection in the pool', async () => {
    current = await coreApp(db.url, { max: 1 })
    const { app, applicationName } = current
    app.get('/long', async (request) => request.db`select pg_sleep(5) as long`)
    app.get('/pid', async (request) => (await request.db`select pg_backend_pid() as pid`)[0])
    const base = await listen(app)
    const pidOf = async () => ((await (await fetch(`${base}/pid`)).json()) as { pid: number }).pid
    const before = await pidOf()
    const long = startRequest(`${base}/long`)
    await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(5)%')) === 1, 'the statement to run')
    long.abort()
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
    expect(await db.running(applicationName, '%pg_sleep(5)%')).toBe(0)
    const after = await pidOf()
    expect(after).toBe(before)
  })
})

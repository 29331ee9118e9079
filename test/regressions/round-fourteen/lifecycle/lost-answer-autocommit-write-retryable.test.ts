import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../../support/database.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'

// Attack: the connection is lost after a write was sent and the server ran it, before its answer
// reached the client (a restart, a cut network path), on a route WITHOUT a route transaction: the
// statement is its own transaction (autocommit), so its commit happened on the server.
//
// Expected (DESIGN.md section 7 "In-doubt commits": once COMMIT has been written and no answer
// came, the outcome is unknown; report it as such. Core README, statement deadline: the pool
// cancels so that a statement is not "commit[ted] after the client was told to retry"): a write
// whose outcome is unknown is not answered as an ordinary retryable failure. A route transaction
// and a begin() block get FST_PG_POOL_COMMIT_UNKNOWN ("it may have committed; retry only an
// idempotent request"); the same write in autocommit gets FST_PG_POOL_CONNECTION_LOST ("the
// connection died under the statement") with Retry-After, and its row is in the table. A client
// that follows Retry-After writes it twice.

let db: TestDatabase
let proxy: TcpProxy
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table lost_answers (id int primary key)`
  proxy = await startTcpProxy(Number(new URL(db.url).port))
})
beforeEach(async () => {
  await db.sql`delete from lost_answers`
  proxy.onClientData = undefined
  proxy.onServerData = undefined
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await proxy.close()
  await db.drop()
})

/** The route transaction's own COMMIT: a simple Query message holding `COMMIT` alone. */
const COMMIT_MESSAGE = Buffer.concat([Buffer.from([0x51, 0, 0, 0, 11]), Buffer.from('COMMIT\0')])

/**
 * The server's answer to the insert (its CommandComplete, sent with ReadyForQuery once the
 * implicit transaction committed) is swallowed, and the sockets are cut.
 */
function loseTheInsertAnswer(): void {
  proxy.onServerData = (chunk) => {
    if (!chunk.includes('INSERT 0 1')) return true
    setImmediate(() => proxy.cutAll())
    return false
  }
}

async function writeApp(): Promise<TestApp> {
  current = await coreApp(proxy.urlFor(db.url), { max: 1 })
  const { app } = current
  app.post('/autocommit', async (request) => {
    await request.db`insert into lost_answers values (1)`
    return { ok: true }
  })
  app.post('/route-transaction', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into lost_answers values (1)`
    return { ok: true }
  })
  await app.ready()
  return current
}

/** The answer says the write may have happened: a lost connection that says so in words. */
const outcomeUnknown = (error: { code?: string; message?: string }): boolean =>
  error.code === 'FST_PG_POOL_CONNECTION_LOST' && /may have run and committed/.test(String(error.message))

const rows = async () => (await db.sql<{ id: number }[]>`select id from lost_answers`).map((r) => r.id)

describe('a write whose answer is lost with its connection', () => {
  test('control, route transaction: the COMMIT answer lost is FST_PG_POOL_COMMIT_UNKNOWN, the row is there', async () => {
    const { app } = await writeApp()
    let committing = false
    proxy.onClientData = (chunk) => {
      if (chunk.includes(COMMIT_MESSAGE)) committing = true
    }
    proxy.onServerData = () => {
      if (!committing) return true
      setImmediate(() => proxy.cutAll())
      return false
    }
    const response = await app.inject({ method: 'POST', url: '/route-transaction' })
    expect(response.json().code).toBe('FST_PG_POOL_COMMIT_UNKNOWN')
    expect(await rows()).toEqual([1])
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
  })

  test('autocommit on request.db: committed, yet answered as a plain lost connection to retry', async () => {
    const { app } = await writeApp()
    // The insert ran and committed on the server; only its answer is lost.
    loseTheInsertAnswer()
    const response = await app.inject({ method: 'POST', url: '/autocommit' })
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
    expect(await rows()).toEqual([1])
    const body = response.json() as { code?: string; message?: string }
    expect(response.statusCode).toBe(503)
    // What a client is told must not read as "nothing happened, retry": the outcome is unknown
    // (FST_PG_POOL_COMMIT_UNKNOWN, or a lost connection that says the statement may have run).
    expect(outcomeUnknown(body)).toBe(true)
  })

  test('autocommit on app.db: committed, yet rejected as a plain lost connection', async () => {
    const { app } = await writeApp()
    loseTheInsertAnswer()
    const error = await app.db`insert into lost_answers values (1)`.then(
      () => undefined,
      (e: { code?: string; message?: string }) => e,
    )
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
    expect(await rows()).toEqual([1])
    expect(outcomeUnknown(error ?? {})).toBe(true)
  })

  test('control, a statement inside a route transaction: lost before COMMIT, nothing committed, and not said to be', async () => {
    const { app } = await writeApp()
    loseTheInsertAnswer()
    const response = await app.inject({ method: 'POST', url: '/route-transaction' })
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
    expect(await rows()).toEqual([])
    const body = response.json() as { code?: string; message?: string }
    expect(response.statusCode).toBe(503)
    expect(body.code).toBe('FST_PG_POOL_CONNECTION_LOST')
    expect(body.message).not.toMatch(/may have/)
  })
})

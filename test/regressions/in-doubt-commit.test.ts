import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'

// Issue 17 item 6: when COMMIT was sent and its answer never came, the client was told
// FST_PG_POOL_COMMIT_FAILED "The transaction was not committed" (fd52652), and the rows were
// committed every time. An unknown outcome is its own error, FST_PG_POOL_COMMIT_UNKNOWN;
// COMMIT_FAILED only where the server said no.

let db: TestDatabase
let proxy: TcpProxy
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create table orders (id int primary key);
    create table parents (id int primary key);
    create table children (id int primary key, parent_id int references parents (id) deferrable initially deferred);
  `)
  proxy = await startTcpProxy(Number(new URL(db.url).port))
})
beforeEach(async () => {
  await db.sql`delete from orders`
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

async function orderApp(pool: Record<string, unknown> = {}): Promise<TestApp> {
  current = await coreApp(proxy.urlFor(db.url), { max: 1, ...pool })
  const { app } = current
  app.post('/orders/:id', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into orders values (${Number((request.params as { id: string }).id)})`
    return { ok: true }
  })
  app.post('/orphans', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into children values (1, 999)`
    return { ok: true }
  })
  await app.ready()
  return current
}

/** The route transaction's own COMMIT: a simple Query message holding `COMMIT` alone. */
const COMMIT_MESSAGE = Buffer.concat([Buffer.from([0x51, 0, 0, 0, 11]), Buffer.from('COMMIT\0')])

/** From the moment COMMIT goes out, the server's answers are swallowed; `then` runs on the first. */
function swallowAfterCommit(then: () => void): void {
  let committing = false
  proxy.onClientData = (chunk) => {
    if (chunk.includes(COMMIT_MESSAGE)) committing = true
  }
  proxy.onServerData = () => {
    if (!committing) return true
    then()
    return false
  }
}

describe('an in-doubt COMMIT is reported as unknown', () => {
  test('the connection is lost after COMMIT was sent: FST_PG_POOL_COMMIT_UNKNOWN, and the row is there', async () => {
    const { app } = await orderApp()
    // The server answered (it committed); the answer never reaches the client: the socket is cut.
    swallowAfterCommit(() => setImmediate(() => proxy.cutAll()))
    const response = await app.inject({ method: 'POST', url: '/orders/1' })
    expect(response.json()).toMatchObject({ statusCode: 503, code: 'FST_PG_POOL_COMMIT_UNKNOWN' })
    expect(response.statusCode).toBe(503)
    expect(response.headers['retry-after']).toBeDefined()
    expect(response.json().code).toBe('FST_PG_POOL_COMMIT_UNKNOWN')
    expect(response.json().message).not.toMatch(/not committed/)
    expect(await db.sql`select id from orders`).toEqual([{ id: 1 }])
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
  })

  test("the server's answer is held past the query deadline: FST_PG_POOL_COMMIT_UNKNOWN", async () => {
    // statementTimeout 300 ms: the client gives up on a statement 1 s past it.
    const { app } = await orderApp({ statementTimeout: 300 })
    swallowAfterCommit(() => {})
    const response = await app.inject({ method: 'POST', url: '/orders/2' })
    expect(response.statusCode).toBe(503)
    expect(response.json().code).toBe('FST_PG_POOL_COMMIT_UNKNOWN')
    expect(await db.sql`select id from orders`).toEqual([{ id: 2 }])
  })

  test('the server refused the COMMIT: FST_PG_POOL_COMMIT_FAILED, no row', async () => {
    const { app } = await orderApp()
    const response = await app.inject({ method: 'POST', url: '/orphans' })
    expect(response.statusCode).toBe(500)
    expect(response.json().code).toBe('FST_PG_POOL_COMMIT_FAILED')
    expect(await db.sql`select * from children`).toEqual([])
  })

  test('the connection was lost before COMMIT was sent: FST_PG_POOL_COMMIT_FAILED (never committed)', async () => {
    const { app } = await orderApp()
    let cut = false
    proxy.onClientData = (chunk) => {
      if (!cut && chunk.includes('insert into orders')) {
        cut = true
        // The insert's answer is lost with the connection: the transaction dies with it.
        setImmediate(() => proxy.cutAll())
      }
    }
    proxy.onServerData = () => !cut
    const response = await app.inject({ method: 'POST', url: '/orders/3' })
    expect(response.statusCode).toBeGreaterThanOrEqual(500)
    expect(response.json().code).not.toBe('FST_PG_POOL_COMMIT_UNKNOWN')
    expect(await db.sql`select id from orders`).toEqual([])
  })
})

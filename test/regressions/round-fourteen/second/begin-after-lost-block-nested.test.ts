import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../../../support/database.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'

// DEFECT (probe-second, medium). A `request.db.begin()` block whose connection is lost (a statement
// of the block, or its COMMIT, gets no answer) leaves the lease believing a block is still open:
// lease.ts transaction() clears `#block` only when the ROLLBACK after a throwing callback succeeds,
// or when the COMMIT's outcome is 'commit'/'commit_failed'. With the connection gone the ROLLBACK
// fails, and a lost COMMIT's outcome is 'commit_unknown': `#block` stays true for the rest of the
// request. What the user sees: a handler that retries its block on a retryable 503 (the usual
// serialization-failure loop: `for (;;) try { return await request.db.begin(...) } catch (e) {
// if (e.statusCode !== 503) throw e }`) gets, on its second attempt, FST_PG_POOL_NESTED_TRANSACTION
// (500, "a transaction inside a transaction": a programming error) instead of what every other
// statement of the request now gets, FST_PG_POOL_CONNECTION_LOST (503 with Retry-After): the
// client is answered 500 and does not retry. (The lease keeps its lost connection for the rest of
// the request, so the retry cannot succeed; it should fail as a lost connection.)

let db: TestDatabase
let proxy: TcpProxy
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table block_after (id int primary key)`
  proxy = await startTcpProxy(Number(new URL(db.url).port))
})
beforeEach(async () => {
  await db.sql`delete from block_after`
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

const rows = async () => (await db.sql<{ id: number }[]>`select id from block_after order by id`).map((r) => r.id)

const COMMIT_MESSAGE = Buffer.concat([Buffer.from([0x51, 0, 0, 0, 11]), Buffer.from('COMMIT\0')])

/** Once: the server's answer to the first client message holding `text` is swallowed, and that connection cut. */
function loseOneAnswer(text: string | Buffer): void {
  let armed = false
  proxy.onClientData = (chunk) => {
    if (chunk.includes(text)) armed = true
  }
  proxy.onServerData = () => {
    if (!armed) return true
    proxy.onClientData = undefined
    proxy.onServerData = undefined
    proxy.cutAll()
    return false
  }
}

interface Outcome {
  first?: string | undefined
  second?: string | undefined
}

async function retryApp(): Promise<{ app: FastifyInstance; outcomes: Outcome[] }> {
  const outcomes: Outcome[] = []
  current = await coreApp(proxy.urlFor(db.url), { max: 2 })
  const { app } = current
  app.post('/retry', async (request) => {
    const outcome: Outcome = {}
    outcomes.push(outcome)
    try {
      await request.db.begin(async (tx) => {
        await tx`insert into block_after values (1)`
      })
    } catch (error) {
      outcome.first = (error as { code?: string }).code
    }
    // The block again, as a retry (ON CONFLICT: idempotent).
    try {
      await request.db.begin(async (tx) => {
        await tx`insert into block_after values (1) on conflict do nothing`
      })
      outcome.second = 'ok'
    } catch (error) {
      outcome.second = (error as { code?: string }).code
    }
    return outcome
  })
  await app.ready()
  return { app, outcomes }
}

describe('a begin() block retried after its connection was lost', () => {
  test("a statement of the block lost: the block's retry is not FST_PG_POOL_NESTED_TRANSACTION", async () => {
    const { app } = await retryApp()
    loseOneAnswer('insert into block_after values (1)\0')
    const response = await app.inject({ method: 'POST', url: '/retry' })
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
    const outcome = response.json() as Outcome
    expect(outcome.first).toBe('FST_PG_POOL_CONNECTION_LOST')
    // What a statement of the request gets once its connection is lost (never 'ok': the lease keeps
    // the lost connection); not a nested-transaction refusal.
    expect(outcome.second).toBe('FST_PG_POOL_CONNECTION_LOST')
    expect(response.statusCode).toBe(200)
    expect(await rows()).toEqual([])
  })

  test("the block's COMMIT answer lost (COMMIT_UNKNOWN): the retry is not FST_PG_POOL_NESTED_TRANSACTION", async () => {
    const { app } = await retryApp()
    loseOneAnswer(COMMIT_MESSAGE)
    const response = await app.inject({ method: 'POST', url: '/retry' })
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
    const outcome = response.json() as Outcome
    expect(outcome.first).toBe('FST_PG_POOL_COMMIT_UNKNOWN')
    expect(outcome.second).toBe('FST_PG_POOL_CONNECTION_LOST')
    expect(await rows()).toEqual([1])
  })

  test('a retry loop on 503s: the client gets 503 with Retry-After, not a 500 FST_PG_POOL_NESTED_TRANSACTION', async () => {
    current = await coreApp(proxy.urlFor(db.url), { max: 2 })
    const { app } = current
    app.post('/loop', async (request) => {
      // A retry loop on retryable 503s (serialization failures), two attempts.
      let last: unknown
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          return await request.db.begin(async (tx) => tx`insert into block_after values (1)`)
        } catch (error) {
          last = error
          if ((error as { statusCode?: number }).statusCode !== 503) throw error
        }
      }
      throw last
    })
    await app.ready()
    loseOneAnswer('insert into block_after values (1)\0')
    const response = await app.inject({ method: 'POST', url: '/loop' })
    await waitUntil(() => app.pgPool.stats().leased === 0, 'the lease to come back')
    expect(response.json().code).toBe('FST_PG_POOL_CONNECTION_LOST')
    expect(response.statusCode).toBe(503)
    expect(response.headers['retry-after']).toBeDefined()
  })
})

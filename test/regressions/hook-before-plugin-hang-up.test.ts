import { Writable } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import type { TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen, startPost } from '../support/http.js'

// Found by hostile probing, second round on client disconnects (195d3bd), failing before the fix.
// The raw response is remembered in the plugin's own onRequest hook (request-lease.ts gateRaw:
// request[kResponse] = reply.raw). A root onRequest hook added before the plugin registers runs
// first; if it uses request.db (a tenant/context hook), #lease finds kResponse null and never
// attaches the 'close' listener, and later uses reuse that lease: a POST client's hang-up is
// never seen (no onRequestAbort once the body was read). The statement runs its 20 s.

let db: TestDatabase
let current: TestApp | undefined
let closers: (() => Promise<unknown>)[] = []
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (body text not null)`
})
beforeEach(async () => {
  await db.sql`truncate note`
})
afterEach(async () => {
  for (const c of closers) await c().catch(() => {})
  closers = []
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const notes = async () => (await db.sql<{ body: string }[]>`select body from note order by body`).map((r) => r.body)

describe("a hang-up on a request whose first lease was taken before the plugin's onRequest", () => {
  test('request.db first used in an onRequest hook added before the plugin: a POST hang-up mid-statement still stops it', async () => {
    const applicationName = uniqueName()
    const app = Fastify({ logger: { level: 'error', stream: new Writable({ write: (_c, _e, cb) => cb() }) } })
    // e.g. a tenant hook that sets the request's context on its connection
    app.addHook('onRequest', async (request) => {
      await request.db`select set_config('app.tenant', 'acme', false)`
    })
    await app.register(pgPoolCore, {
      connection: db.url,
      pool: { max: 1, acquireTimeout: 10_000, statementTimeout: 30_000, applicationName },
    })
    closers.push(() => app.close())
    let settled: unknown
    app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into note values ('hooked')`
      try {
        await request.db`select pg_sleep(20) as hooked_sleep`
        settled = 'ran'
      } catch (error) {
        settled = (error as { code?: string }).code ?? String(error)
      }
      return { ok: true }
    })
    const base = await listen(app)
    const client = startPost(`${base}/tx`, { a: 1 })
    await waitUntil(async () => (await db.running(applicationName, '%hooked_sleep%')) === 1, 'the statement', 10_000)
    client.abort()
    expect(await client.done).toBe('aborted')
    const stopped = await waitFor(
      async () => settled !== undefined && (await db.running(applicationName, '%hooked_sleep%')) === 0,
      6_000,
    )
    expect({ stopped, settled }).toEqual({ stopped: true, settled: 'FST_PG_POOL_ABORTED' })
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual([])
  })
})

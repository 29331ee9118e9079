import { Writable } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'
import { uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen, startPost } from '../support/http.js'
import { noteTable } from '../support/note-table.js'

// Found by hostile probing, second round on client disconnects (195d3bd), failing before the fix.
// The raw response is remembered in the plugin's own onRequest hook (request-lease.ts gateRaw:
// request[kResponse] = reply.raw). A root onRequest hook added before the plugin registers runs
// first; if it uses request.db (a tenant/context hook), #lease finds kResponse null and never
// attaches the 'close' listener, and later uses reuse that lease: a POST client's hang-up is
// never seen (no onRequestAbort once the body was read). The statement runs its 20 s.

const fx = noteTable()
const notes = fx.notes

describe("a hang-up on a request whose first lease was taken before the plugin's onRequest", () => {
  test('request.db first used in an onRequest hook added before the plugin: a POST hang-up mid-statement still stops it', async () => {
    const applicationName = uniqueName()
    const app = Fastify({ logger: { level: 'error', stream: new Writable({ write: (_c, _e, cb) => cb() }) } })
    // e.g. a tenant hook that sets the request's context on its connection
    app.addHook('onRequest', async (request) => {
      await request.db`select set_config('app.tenant', 'acme', false)`
    })
    await app.register(pgPoolCore, {
      connection: fx.db.url,
      pool: { max: 1, acquireTimeout: 10_000, statementTimeout: 30_000, applicationName },
    })
    fx.closers.push(() => app.close())
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
    await waitUntil(async () => (await fx.db.running(applicationName, '%hooked_sleep%')) === 1, 'the statement', 10_000)
    client.abort()
    expect(await client.done).toBe('aborted')
    const stopped = await waitFor(
      async () => settled !== undefined && (await fx.db.running(applicationName, '%hooked_sleep%')) === 0,
      6_000,
    )
    expect({ stopped, settled }).toEqual({ stopped: true, settled: 'FST_PG_POOL_ABORTED' })
    expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
    expect(await notes()).toEqual([])
  })
})

// HELD (probe-tx-edges, round 12): the backend of a route transaction is terminated
// (pg_terminate_backend) between the handler's last statement and the pool's COMMIT, for a JSON
// reply and a streamed one, in every sessionReset mode, on a pool of one connection.
// The client never gets a 2xx, only a coded FST_PG_POOL_COMMIT_* error, or (since round sixteen,
// when the pool saw the server close the connection before the COMMIT could be sent) the
// retryable 503 FST_PG_POOL_CONNECTION_LOST (a stream is never sent);
// nothing is committed; the transaction's outcome is never `commit`; the next request is served
// on a fresh connection outside any transaction. (test/faults/terminated-backend.test.ts covers
// the JSON reply in the default mode only.)
import { Readable } from 'node:stream'
import { describe, expect, test } from 'vitest'
import { deferred } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { waitFor } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'

const fx = noteTable()

describe('pg_terminate_backend between the last statement and COMMIT', () => {
  for (const sessionReset of ['always', 'rollback', 'never'] as const) {
    for (const payload of ['json', 'stream'] as const) {
      test(`${sessionReset}, ${payload} reply: a coded 5xx, nothing committed, the next request served clean`, async () => {
        fx.current = await coreApp(fx.db.directUrl, { max: 1, sessionReset, acquireTimeout: 5_000 })
        const { app, applicationName } = fx.current
        const outcomes: string[] = []
        app.pgPool.on('transaction', (outcome: string) => void outcomes.push(outcome))
        const wrote = deferred()
        const proceed = deferred()
        app.post('/w', { config: { db: { transaction: true } } }, async (request) => {
          await request.db`insert into note values ('lost')`
          wrote.resolve()
          await proceed.promise
          return payload === 'json' ? { ok: true } : Readable.from(['{"ok":', 'true}'])
        })
        app.get(
          '/next',
          async (request) =>
            (await request.db`select txid_current_if_assigned() as xid, count(*)::int as n from note`)[0],
        )
        await app.ready()
        const pending = app.inject({ method: 'POST', url: '/w' })
        await wrote.promise
        expect(await fx.db.terminate(applicationName)).toBe(1)
        expect(await waitFor(async () => (await fx.db.countConnections(applicationName)) === 0)).toBe(true)
        proceed.resolve()
        const res = await pending
        expect(res.statusCode, res.body).toBeGreaterThanOrEqual(500)
        expect(res.json().code).toMatch(/^FST_PG_POOL_(COMMIT_FAILED|COMMIT_UNKNOWN|CONNECTION_LOST)$/)
        expect(res.body).not.toContain('"ok":true')
        expect(await fx.notes()).toEqual([])
        expect(outcomes.length).toBe(1)
        expect(outcomes[0]).not.toBe('commit')
        const next = await app.inject({ method: 'GET', url: '/next' })
        expect(next.statusCode, next.body).toBe(200)
        expect(next.json()).toEqual({ xid: null, n: 0 })
        expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
      })
    }
  }
})

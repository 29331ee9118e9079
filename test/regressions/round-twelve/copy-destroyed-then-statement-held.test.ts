import type { Readable } from 'node:stream'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { noteTable } from '../../support/note-table.js'

// HELD (probe-fourth): a COPY TO STDOUT whose reader destroys its stream after the first chunk
// (no longer "open" by lease.ts streamOpen: `stream.destroyed`), then sends its next statement on
// request.db, on a plain, a transaction and a pipelined route. The request is answered (its
// statement runs, or is refused with COPY_IN_PROGRESS as postgres.js refuses it while the COPY
// still streams), nothing hangs, the pool is whole afterwards and the next request is served.

const fx = noteTable()
failOnProcessErrors()

for (const kind of ['plain', 'transaction', 'pipeline'] as const) {
  const db = kind === 'pipeline' ? { pipeline: true as const } : { transaction: kind === 'transaction' }
  test(`${kind} route: destroy a COPY TO STDOUT reader early, then query`, async () => {
    const t = await coreApp(fx.db.url, { max: 2, acquireTimeout: 5000 })
    fx.current = t
    const { app } = t
    let outcome: { ran?: number | undefined; refused?: string | undefined } = {}
    app.get('/copy-destroy', { config: { db } }, async (request) => {
      const stream: Readable =
        await request.db`copy (select g, repeat('x', 200) from generate_series(1, 200000) g) to stdout`.readable()
      await new Promise<void>((resolve) => stream.once('data', () => resolve()))
      stream.destroy()
      try {
        const [row] = await request.db<{ one: number }[]>`select 1 as one`
        outcome = { ran: row?.one }
      } catch (error) {
        outcome = { refused: (error as { code?: string }).code }
      }
      return outcome
    })
    app.get('/after', { config: { db } }, async (request) => {
      const [row] = await request.db<{ one: number }[]>`select 1 as one`
      return row
    })
    await app.ready()
    const first = await app.inject({ method: 'GET', url: '/copy-destroy' })
    // The handler's statement ran, or was refused as postgres.js refuses it during a COPY.
    expect(outcome.ran === 1 || outcome.refused === 'COPY_IN_PROGRESS', JSON.stringify(outcome)).toBe(true)
    // A route transaction cannot commit past a COPY its handler stopped reading (the pool cancels
    // it, README "What only the handler could move on"): 500, told as not committed.
    if (kind === 'transaction') {
      expect({ status: first.statusCode, code: first.json().code }).toEqual({
        status: 500,
        code: 'FST_PG_POOL_COMMIT_FAILED',
      })
    } else expect({ status: first.statusCode, body: first.json() }).toEqual({ status: 200, body: outcome })
    for (let i = 0; i < 3; i++) {
      const res = await app.inject({ method: 'GET', url: '/after' })
      expect({ status: res.statusCode, body: res.json() }).toEqual({ status: 200, body: { one: 1 } })
    }
    const stats = app.pgPool.stats()
    expect(stats.leased).toBe(0)
    expect(stats.waiting).toBe(0)
  }, 60_000)
}

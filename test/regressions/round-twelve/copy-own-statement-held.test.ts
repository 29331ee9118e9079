import { finished } from 'node:stream/promises'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { noteTable } from '../../support/note-table.js'

// HELD (probe-fixes-adapter): commit 60d9641. A statement of the request awaited while its own
// COPY FROM STDIN is open fails at once with COPY_IN_PROGRESS (as postgres.js refuses it) in a
// route transaction, a begin() block and on a pipelined route; the handler goes on, ends its COPY,
// and the rows are written (committed with the route's transaction). The plain route does not:
// copy-own-statement-plain-route.test.ts.

const fx = noteTable()
failOnProcessErrors()

for (const kind of ['route transaction', 'begin() block', 'pipelined route'] as const) {
  test(`${kind}: a statement of the holder while its COPY FROM STDIN is open fails at once`, async () => {
    fx.current = await coreApp(fx.db.url, { max: 2, statementTimeout: 4000 })
    const { app } = fx.current
    const config =
      kind === 'route transaction'
        ? { db: { transaction: true } }
        : kind === 'pipelined route'
          ? { db: { pipeline: true } }
          : {}
    app.post('/copy', { config }, async (request) => {
      const run = async (db: typeof request.db) => {
        const writable = await db`copy note (body) from stdin`.writable()
        writable.write('copied\n')
        let seen: string
        try {
          await db`select 1 as one`
          seen = 'ran'
        } catch (error) {
          seen = String((error as { code?: unknown }).code)
        }
        writable.end()
        await finished(writable)
        return { seen }
      }
      if (kind === 'begin() block') return request.db.begin((tx) => run(tx as unknown as typeof request.db))
      return run(request.db)
    })
    const res = await app.inject({ method: 'POST', url: '/copy' })
    expect({ status: res.statusCode, body: res.json() }).toEqual({ status: 200, body: { seen: 'COPY_IN_PROGRESS' } })
    expect(await fx.notes()).toEqual(['copied'])
    expect(app.pgPool.stats().leased).toBe(0)
  })
}

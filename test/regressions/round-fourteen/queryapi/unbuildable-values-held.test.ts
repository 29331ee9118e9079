import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { noteTable } from '../../../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../../../support/session-probe.js'

// HELD (probe-queryapi): values postgres.js cannot serialize, other than the undefined values and
// parameter counts test/regressions/client-side-build-errors.test.ts covers: an invalid Date (its
// serializer's toISOString throws RangeError), a BigInt and a circular object inside db.json()
// (JSON.stringify throws TypeError), an invalid Date inside db.array(). Sent first, or behind a
// statement still running, on a plain route, a route transaction and a pipelined route, at max: 1:
// each request fails with a 500 of its own (never a 503 after statementTimeout, never a hang), what
// the route transaction wrote before is not committed, the lease comes back and the next request
// on the connection gets a clean session. The statement timeout is set far past the test's timeout,
// so a request waiting for it fails the test by timing out.

const fx = noteTable()
failOnProcessErrors()

const circular: Record<string, unknown> = {}
circular.self = circular

const values: Record<string, (db: Record<string, (...a: unknown[]) => unknown>) => unknown> = {
  date: () => new Date(Number.NaN),
  bigintJson: (db) => db.json?.({ n: 1n }),
  circularJson: (db) => db.json?.(circular),
  dateArray: (db) => db.array?.([new Date(Number.NaN)]),
}

for (const mode of ['plain', 'tx', 'pipe'] as const) {
  test(`unserializable values on a ${mode} route: a 500 of the request's own, nothing committed, lease back, clean session`, async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, statementTimeout: 120_000, acquireTimeout: 60_000 })
    const { app } = fx.current
    addSessionProbe(app)
    const config = mode === 'tx' ? { db: { transaction: true } } : mode === 'pipe' ? { db: { pipeline: true } } : {}
    app.get<{ Params: { kind: string; behind: string } }>('/bad/:kind/:behind', { config }, async (request) => {
      const db = request.db
      const value = values[request.params.kind]?.(db as unknown as Record<string, (...a: unknown[]) => unknown>)
      if (mode === 'tx') await db`insert into note values (${`before-${request.params.kind}`})`
      if (request.params.behind === 'yes') {
        await Promise.all([db`select pg_sleep(0.2)`, db`select ${value as string} as v`])
      } else {
        await db`select ${value as string} as v`
      }
      return { ran: true }
    })
    for (const kind of Object.keys(values)) {
      for (const behind of mode === 'pipe' ? ['no'] : ['no', 'yes']) {
        const res = await app.inject(`/bad/${kind}/${behind}`)
        expect(res.statusCode, `${kind} behind=${behind}: ${res.body}`).toBe(500)
        expect(String(res.json().code ?? '')).not.toMatch(/^FST_PG_POOL_/)
        expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
      }
    }
    expect(await fx.notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  }, 60_000)
}

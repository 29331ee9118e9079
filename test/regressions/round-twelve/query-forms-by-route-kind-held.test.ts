import { unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { waitFor } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../../support/session-probe.js'

// HELD (probe-sql-surface): every non-streaming form of the postgres.js query API on request.db
// (describe, simple, values, raw, a query awaited twice, file() with parameters and postgres.js's
// `{ cache }` option, json/array/typed helpers, a dynamic fragment, an identifier, unsafe with
// `prepare: true`, notify), on a plain route, a route transaction and a pipelined route, at max: 1:
// each answers as postgres.js does, the lease comes back, and the next request's session is clean.

const fx = noteTable()
failOnProcessErrors()

for (const mode of ['plain', 'tx', 'pipe'] as const) {
  test(`the query API's forms on a ${mode} route: postgres.js answers, lease back, next session clean`, async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    const config = mode === 'tx' ? { db: { transaction: true } } : mode === 'pipe' ? { db: { pipeline: true } } : {}
    const file = join(tmpdir(), `probe-${Math.random()}.sql`)
    writeFileSync(file, 'select $1::int as v')
    app.get('/m', { config }, async (request) => {
      const db = request.db
      const out: Record<string, unknown> = {}
      const d = await db`select ${1}::int as a, ${'x'}::text as b`.describe()
      out.describe = (d as unknown as { types: number[] }).types
      out.simple = await db`select 1 as s`.simple()
      out.values = await db`select 1 as s`.values()
      out.raw = (await db`select 1 as s`.raw())[0]?.[0]?.length
      const q = db`select 2 as t`
      const r1 = await q
      const r2 = await q
      out.then2 = [r1[0], r2[0]]
      out.file = await db.file(file, [5], { cache: true } as never)
      out.json = await db`select ${db.json({ a: 1 })}::jsonb as j`
      out.array = await db`select ${db.array([1, 2])}::int[] as arr`
      out.typed = await db`select ${db.typed(3, 23)} as t`
      const frag = db`where x = ${4}`
      out.frag = await db`select x from (select 4 as x) s ${frag}`
      out.ident = await db`select 1 as ${db('col name')}`
      out.unsafeP = await db.unsafe('select $1::int as u', [7], { prepare: true })
      out.notify = await db.notify('chan', 'payload')
      return out
    })
    const res = await app.inject('/m')
    unlinkSync(file)
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({
      describe: [23, 25],
      simple: [{ s: 1 }],
      values: [[1]],
      raw: 1,
      then2: [{ t: 2 }, { t: 2 }],
      file: [{ v: 5 }],
      json: [{ j: { a: 1 } }],
      array: [{ arr: [1, 2] }],
      typed: [{ t: 3 }],
      frag: [{ x: 4 }],
      ident: [{ 'col name': 1 }],
      unsafeP: [{ u: 7 }],
      notify: [{ pg_notify: '' }],
    })
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    await expectCleanSession(fx.db, fx.current)
  })
}

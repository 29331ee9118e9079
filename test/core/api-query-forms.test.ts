import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { noteTable } from '../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../support/session-probe.js'

// Held attacks from hostile probing (round 8, request.db misuse): odd arguments to postgres.js's query forms on request.db.

const fx = noteTable({ primaryKey: true })
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const
const pipe = { config: { db: { pipeline: true } } } as const

describe('cursor() batch sizes', () => {
  for (const [label, rows] of [
    ['-1', -1],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['2**32', 2 ** 32],
    ['NaN', Number.NaN],
    ['0', 0],
    ['1.5', 1.5],
  ] as const) {
    test(`cursor(${label}) as the first statement: a reply (no hang), next request on the connection is clean`, async () => {
      fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 2_000, statementTimeout: 3_000 })
      const { app } = fx.current
      addSessionProbe(app)
      app.get('/cursor', async (request) => {
        let n = 0
        for await (const batch of request.db`select i from generate_series(1, 10) i`.cursor(rows)) n += batch.length
        return { n }
      })
      const res = await app.inject('/cursor')
      expect([200, 500]).toContain(res.statusCode)
      if (res.statusCode === 200) expect(res.json()).toEqual({ n: 10 })
      await expectCleanSession(fx.db, fx.current)
    })

    test(`cursor(${label}) behind another statement in a route transaction: a reply, nothing committed if it failed`, async () => {
      fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 2_000, statementTimeout: 3_000 })
      const { app } = fx.current
      addSessionProbe(app)
      app.get('/cursor', tx, async (request) => {
        const first = request.db`insert into note values ('before')`.execute()
        let n = 0
        for await (const batch of request.db`select i from generate_series(1, 10) i`.cursor(rows)) n += batch.length
        await first
        return { n }
      })
      const res = await app.inject('/cursor')
      expect([200, 500, 503]).toContain(res.statusCode)
      if (res.statusCode === 200) {
        expect(res.json()).toEqual({ n: 10 })
        expect(await notes()).toEqual(['before'])
      } else {
        expect(await notes()).toEqual([])
      }
      await expectCleanSession(fx.db, fx.current)
    })
  }
})

describe('pipelined routes', () => {
  test('request.db of a pipelined request kept and used by a later request: refused, nothing runs', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    let kept: typeof app extends never
      ? never
      : ((s: TemplateStringsArray, ...a: unknown[]) => PromiseLike<unknown>) | undefined
    let keptQuery: PromiseLike<unknown> | undefined
    app.get('/make', pipe, async (request) => {
      await request.db`select 1`
      kept = request.db as never
      keptQuery = request.db`insert into note values ('ghost-query')`
      return { ok: true }
    })
    app.get('/use', pipe, async (request) => {
      await request.db`select 1`
      const k = kept as NonNullable<typeof kept>
      const a = await Promise.resolve(k`insert into note values ('ghost')`).then(
        () => 'ran',
        (e: { code?: string }) => e.code,
      )
      const b = await Promise.resolve(keptQuery).then(
        () => 'ran',
        (e: { code?: string }) => e.code,
      )
      return { a, b }
    })
    expect((await app.inject('/make')).statusCode).toBe(200)
    const res = await app.inject('/use')
    expect(res.json()).toEqual({ a: 'FST_PG_POOL_RELEASED', b: 'FST_PG_POOL_RELEASED' })
    expect(await notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })

  test('Promise.all of 40 statements on pipelined requests sharing a connection: all answered, lease back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, pipelineDepth: 4 })
    const { app } = fx.current
    addSessionProbe(app)
    app.get('/many/:k', pipe, async (request) => {
      const k = (request.params as { k: string }).k
      const results = await Promise.all(
        Array.from({ length: 40 }, (_, i) => request.db`select ${`${k}-${i}`}::text as v`),
      )
      return { ok: results.every((r, i) => r[0]?.v === `${k}-${i}`) }
    })
    const all = await Promise.all(Array.from({ length: 8 }, (_, k) => app.inject(`/many/${k}`)))
    for (const res of all) expect(res.json()).toEqual({ ok: true })
    await expectCleanSession(fx.db, fx.current)
  })
})

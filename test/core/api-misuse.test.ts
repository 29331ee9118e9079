import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { noteTable } from '../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../support/session-probe.js'

// Held attacks from hostile probing (round 8, request.db misuse): an application developer misusing request.db and its postgres.js-shaped API.

const fx = noteTable({ primaryKey: true })
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const

describe('handles kept past their request', () => {
  test('request.db kept and used from a setTimeout after the reply: refused, nothing runs', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    let later: Promise<unknown> | undefined
    app.get('/keep', async (request) => {
      await request.db`select 1`
      const kept = request.db
      later = new Promise((resolve) => setTimeout(resolve, 50)).then(() => kept`insert into note values ('late')`)
      later.catch(() => {})
      return { ok: true }
    })
    expect((await app.inject('/keep')).statusCode).toBe(200)
    await expect(later).rejects.toMatchObject({ code: 'FST_PG_POOL_RELEASED' })
    expect(await notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })

  test('a query object built in one request and awaited in the next: refused, never runs there', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    let kept: PromiseLike<unknown> | undefined
    app.get('/make', async (request) => {
      await request.db`select 1`
      kept = request.db`insert into note values ('ghost') returning body`
      return { ok: true }
    })
    app.get('/use', async (request) => {
      await request.db`select set_config('app.x', 'mine', false)`
      const result = await Promise.resolve(kept).then(
        (rows) => ({ ran: rows }),
        (error: { code?: string }) => ({ refused: error.code }),
      )
      return result
    })
    expect((await app.inject('/make')).statusCode).toBe(200)
    const res = await app.inject('/use')
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({ refused: 'FST_PG_POOL_RELEASED' })
    expect(await notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })

  test("a begin() handle kept and used by the next request: refused, never in that request's session", async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    let keptTx: ((s: TemplateStringsArray, ...a: unknown[]) => PromiseLike<unknown>) | undefined
    app.get('/make', async (request) => {
      await request.db.begin(async (sql) => {
        keptTx = sql as never
        await sql`insert into note values ('a')`
      })
      return { ok: true }
    })
    app.get('/use', tx, async (request) => {
      await request.db`insert into note values ('b')`
      const out = await Promise.resolve((keptTx as NonNullable<typeof keptTx>)`insert into note values ('ghost')`).then(
        () => 'ran',
        (error: { code?: string }) => error.code,
      )
      return { out }
    })
    expect((await app.inject('/make')).statusCode).toBe(200)
    const res = await app.inject('/use')
    expect(res.json()).toEqual({ out: 'FST_PG_POOL_RELEASED' })
    expect(await notes()).toEqual(['a', 'b'])
    await expectCleanSession(fx.db, fx.current)
  })

  test('a cursor kept past its request: next() refused, connection clean', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    let iterator: AsyncIterator<unknown> | undefined
    app.get('/make', async (request) => {
      iterator = request.db`select i from generate_series(1, 100) i`.cursor(10)[Symbol.asyncIterator]()
      const first = await iterator.next()
      return { got: (first.value as unknown[]).length }
    })
    app.get('/use', async (request) => {
      await request.db`select 1`
      const out = await (iterator as AsyncIterator<unknown>).next().then(
        (r) => (r.done ? 'done' : 'rows'),
        (error: { code?: string }) => error.code,
      )
      return { out }
    })
    expect((await app.inject('/make')).json()).toEqual({ got: 10 })
    const res = await app.inject('/use')
    expect(res.statusCode).toBe(200)
    expect(['FST_PG_POOL_RELEASED', 'done']).toContain(res.json().out)
    await expectCleanSession(fx.db, fx.current)
  })
})

describe('postgres.js methods that make no sense on a lease', () => {
  test('end/close/reserve/listen/subscribe/options/largeObject: none reaches the pool', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.get('/misuse/:what', async (request) => {
      const what = (request.params as { what: string }).what
      const handle = request.db as unknown as Record<string, unknown>
      const member = handle[what]
      if (typeof member === 'function') {
        try {
          await (member as (...a: unknown[]) => unknown).call(handle, 'x', () => {})
          return { what, type: 'function', outcome: 'resolved' }
        } catch (error) {
          return { what, type: 'function', outcome: (error as { code?: string }).code ?? 'error' }
        }
      }
      return { what, type: typeof member }
    })
    for (const what of ['end', 'close', 'reserve', 'listen', 'subscribe', 'largeObject', 'options', 'parameters']) {
      const res = await app.inject(`/misuse/${what}`)
      expect(res.statusCode, what).toBe(200)
    }
    // The pool still serves.
    await expectCleanSession(fx.db, fx.current)
  })
})

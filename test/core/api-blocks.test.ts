import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { waitFor } from '../support/database.js'
import { noteTable } from '../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../support/session-probe.js'

// Held attacks from hostile probing (round 8, request.db misuse): begin()/savepoint()/Promise.all misuse on request.db.

const fx = noteTable({ primaryKey: true })
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const

describe('begin() blocks', () => {
  test('an error caught inside begin(), the callback returns: begin rejects COMMIT_FAILED, caught, 200, nothing committed', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.get('/swallow', async (request) => {
      const outcome = await request.db
        .begin(async (sql) => {
          await sql`insert into note values ('a')`
          await sql`insert into note values ('a')`.catch(() => {})
          return 'returned'
        })
        .then(
          () => 'committed',
          (error: { code?: string }) => error.code,
        )
      return { outcome }
    })
    const res = await app.inject('/swallow')
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({ outcome: 'FST_PG_POOL_COMMIT_FAILED' })
    expect(await notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })

  test('begin() callback returns before its queries finish (forgotten execute): they run inside the block', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.get('/forget', async (request) => {
      await request.db.begin((sql) => {
        sql`select pg_sleep(0.1)`.execute()
        sql`insert into note values ('late-in-block')`.execute()
        return 'early'
      })
      const [row] = await request.db`select count(*)::int as n from note where body = 'late-in-block'`
      return row
    })
    const res = await app.inject('/forget')
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({ n: 1 })
    expect(await notes()).toEqual(['late-in-block'])
    await expectCleanSession(fx.db, fx.current)
  })

  test('nested begin() inside begin() and begin() on a route transaction: coded 500, nothing committed, clean', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.get('/nested', async (request) =>
      request.db.begin(async (sql) => {
        await sql`insert into note values ('outer')`
        await (sql as unknown as typeof request.db).begin(async (inner) => inner`insert into note values ('inner')`)
      }),
    )
    app.get('/route-nested', tx, async (request) => {
      await request.db`insert into note values ('route')`
      await request.db.begin(async (sql) => sql`insert into note values ('inner')`)
      return { ok: true }
    })
    const a = await app.inject('/nested')
    expect(a.statusCode).toBe(500)
    expect(a.json()).toMatchObject({ code: 'FST_PG_POOL_NESTED_TRANSACTION' })
    const b = await app.inject('/route-nested')
    expect(b.statusCode).toBe(500)
    expect(b.json()).toMatchObject({ code: 'FST_PG_POOL_NESTED_TRANSACTION' })
    expect(await notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })

  test('savepoint() on a plain route outside any block: an error reply, the session is clean after', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.get('/sp', async (request) => {
      await request.db.savepoint(async (sql) => sql`insert into note values ('sp')`)
      return { ok: true }
    })
    const res = await app.inject('/sp')
    expect(res.statusCode).toBeGreaterThanOrEqual(400)
    expect(await notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })

  test('savepoint failing inside a route transaction, caught: the rest commits', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.get('/sp', tx, async (request) => {
      await request.db`insert into note values ('kept')`
      await request.db
        .savepoint(async (sql) => {
          await sql`insert into note values ('dropped')`
          await sql`insert into note values ('kept')`
        })
        .catch(() => {})
      return { ok: true }
    })
    const res = await app.inject('/sp')
    expect(res.statusCode).toBe(200)
    expect(await notes()).toEqual(['kept'])
    await expectCleanSession(fx.db, fx.current)
  })
})

describe('Promise.all', () => {
  test('Promise.all of 50 inserts in a route transaction, one conflicts, handler catches and returns 200: 500 COMMIT_FAILED, none', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.get('/many', tx, async (request) => {
      const values = Array.from({ length: 50 }, (_, i) => (i === 25 ? 'v0' : `v${i}`))
      await Promise.all(values.map((v) => request.db`insert into note values (${v})`)).catch(() => {})
      return { ok: true }
    })
    const res = await app.inject('/many')
    expect(res.statusCode).toBe(500)
    expect(res.json()).toMatchObject({ code: 'FST_PG_POOL_COMMIT_FAILED' })
    expect(await notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })

  test('Promise.all of inserts on a plain route, one conflicts: 409, and the rest either ran or were refused', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    const settled: Record<string, string> = {}
    app.get('/many', async (request) => {
      const values = Array.from({ length: 20 }, (_, i) => (i === 5 ? 'v0' : `v${i}`))
      await Promise.all(
        values.map((v, i) =>
          request.db`insert into note values (${v})`.then(
            (r) => {
              settled[i] = 'ok'
              return r
            },
            (error: { code?: string }) => {
              settled[i] = error.code ?? 'error'
              throw error
            },
          ),
        ),
      )
      return { ok: true }
    })
    const res = await app.inject('/many')
    expect(res.statusCode).toBe(409)
    expect(await waitFor(() => Object.keys(settled).length === 20)).toBe(true)
    const rows = await notes()
    // Each statement the handler was told succeeded is there; none it was told failed is.
    for (let i = 0; i < 20; i++) {
      const v = i === 5 ? 'v0' : `v${i}`
      if (settled[i] === 'ok') expect(rows).toContain(v)
    }
    expect(rows.length).toBe(Object.values(settled).filter((s) => s === 'ok').length)
    await expectCleanSession(fx.db, fx.current)
  })

  test('a forgotten (never awaited) query on a route transaction: 200 and nothing runs; next request clean', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.get('/forget', tx, async (request) => {
      await request.db`insert into note values ('awaited')`
      request.db`insert into note values ('never-awaited')`
      return { ok: true }
    })
    const res = await app.inject('/forget')
    expect(res.statusCode).toBe(200)
    expect(await notes()).toEqual(['awaited'])
    await expectCleanSession(fx.db, fx.current)
  })

  test('a started, unawaited, failing query on a route transaction: not a 2xx, nothing committed', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    app.get('/forget', tx, async (request) => {
      await request.db`insert into note values ('awaited')`
      request.db`insert into note values ('awaited')`.execute().catch(() => {})
      return { ok: true }
    })
    const res = await app.inject('/forget')
    expect(res.statusCode).toBe(500)
    expect(await notes()).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })
})

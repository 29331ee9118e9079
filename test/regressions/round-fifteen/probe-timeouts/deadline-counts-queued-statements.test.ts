// The client-side statement deadline (`statementTimeout` + 1 s) is promised per statement: "the
// client also abandons a statement 1 s past it and closes its connection (a frozen server never
// answers)". A user runs several statements together where the pool lets them travel together (a
// route transaction's `Promise.all`, a `begin()` block's, pipelined routes sharing a connection),
// each well within `statementTimeout` on a server that answers every one of them.
// Should get: 200, everything committed, nothing cut: no statement ran past its deadline.
// Got: the deadline counted each statement from the moment it was written behind the others, not
// from when the server began running it, so the last ones "ran past" it while waiting their turn:
// 503 FST_PG_POOL_QUERY_TIMEOUT, the transaction rolled back, the connection cut (on pipelined
// routes every request sharing it failed, a healthy server taken for a frozen one).
import { describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { noteTable } from '../../../support/note-table.js'

const fx = noteTable()

// statement_timeout 1.5 s: the deadline is at 2.5 s. Each statement sleeps 0.8 s, four of them
// 3.2 s in all on the server, one after the other.
const pool = { max: 2, statementTimeout: 1_500, acquireTimeout: 10_000 }
const sleeps = 4

describe('statements sent together, each within statementTimeout', () => {
  test('route transaction, Promise.all: 200 and committed', async () => {
    fx.current = await coreApp(fx.db.directUrl, pool)
    const { app } = fx.current
    const closed: string[] = []
    app.pgPool.on('close', (reason: string) => void closed.push(reason))
    app.post('/batch', { config: { db: { transaction: true } } }, async (request) => {
      await Promise.all(
        Array.from({ length: sleeps }, (_, i) => request.db`insert into note select ${`n${i}`} from pg_sleep(0.8)`),
      )
      return { ok: true }
    })
    await app.ready()
    const res = await app.inject({ method: 'POST', url: '/batch' })
    expect(res.statusCode, res.body).toBe(200)
    expect(await fx.notes()).toEqual(['n0', 'n1', 'n2', 'n3'])
    expect(closed).not.toContain('deadline')
  })

  test('begin() block, Promise.all: 200 and committed', async () => {
    fx.current = await coreApp(fx.db.directUrl, pool)
    const { app } = fx.current
    app.post('/block', async (request) => {
      await request.db.begin((tx) =>
        Promise.all(
          Array.from({ length: sleeps }, (_, i) => tx`insert into note select ${`b${i}`} from pg_sleep(0.8)`),
        ),
      )
      return { ok: true }
    })
    await app.ready()
    const res = await app.inject({ method: 'POST', url: '/block' })
    expect(res.statusCode, res.body).toBe(200)
    expect(await fx.notes()).toEqual(['b0', 'b1', 'b2', 'b3'])
  })

  test('pipelined route, requests sharing one connection: every one 200', async () => {
    fx.current = await coreApp(fx.db.directUrl, { ...pool, max: 1 })
    const { app } = fx.current
    const closed: string[] = []
    app.pgPool.on('close', (reason: string) => void closed.push(reason))
    app.get('/slow', { config: { db: { pipeline: true } } }, async (request) => {
      const [row] = await request.db`select pg_sleep(0.8), 1 as one`
      return row
    })
    await app.ready()
    const results = await Promise.all(Array.from({ length: sleeps }, () => app.inject({ method: 'GET', url: '/slow' })))
    expect(
      results.map((r) => r.statusCode),
      results.map((r) => r.body).join('\n'),
    ).toEqual(Array(sleeps).fill(200))
    expect(closed).not.toContain('deadline')
  })
})

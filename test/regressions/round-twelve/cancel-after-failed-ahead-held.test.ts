import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { noteTable } from '../../support/note-table.js'

// HELD (probe-fixes-adapter): lease.ts cancelQuery / #cancelIfFirst. In a begin() block, b.cancel()
// while b waits behind a running a; a then FAILS (b is doomed: 25P02). The deferred cancel request is
// sent when a's error is read; the next request, waiting for the pool's one connection, runs a
// statement right after: it is never the one cancelled (8 rounds).

const fx = noteTable()
failOnProcessErrors()

test('begin(): b.cancel() deferred behind a statement that then fails: the next request is not cancelled', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app, applicationName } = fx.current
  app.get('/block', async (request) => {
    const out: Record<string, unknown> = {}
    await request.db
      .begin(async (tx) => {
        const a = tx`do $$ begin perform pg_sleep(0.4); raise exception 'boom'; end $$`.execute()
        a.catch(() => {})
        const b = tx`insert into note select 'b' from pg_sleep(0.6)`.execute()
        b.catch(() => {})
        while ((await fx.db.running(applicationName, '%pg_sleep(0.4)%')) === 0)
          await new Promise((r) => setTimeout(r, 10))
        b.cancel()
        out.a = await a.then(
          () => 'ok',
          (e: { code?: string }) => e.code,
        )
        out.b = await b.then(
          () => 'ok',
          (e: { code?: string }) => e.code,
        )
      })
      .catch(() => {})
    return out
  })
  app.get('/next', async (request) => {
    try {
      await request.db`select pg_sleep(0.3)`
      return { next: 'ok' }
    } catch (error) {
      return { next: (error as { code?: string }).code }
    }
  })
  for (let round = 0; round < 8; round++) {
    const first = app.inject('/block')
    // /next waits in the pool's queue for the one connection.
    await new Promise((r) => setTimeout(r, 100))
    const next = app.inject('/next')
    const [f, n] = await Promise.all([first, next])
    expect(f.json()).toEqual({ a: 'P0001', b: '25P02' })
    expect(n.json()).toEqual({ next: 'ok' })
  }
}, 60_000)

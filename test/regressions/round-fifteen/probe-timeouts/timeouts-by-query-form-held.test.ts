// HELD (probe-timeouts, round 15): a statement ended by a timeout, in each query form, answers a
// retryable 503 and leaves nothing behind.
// 1. The server's statement_timeout (the pool's) stops a `begin()` block's statement, a
//    `savepoint()`'s in a route transaction, a cursor, a `forEach` and a COPY TO STDOUT returned as
//    the payload: 503 FST_PG_POOL_QUERY_TIMEOUT with Retry-After, nothing committed.
// 2. The client-side deadline (a statement_timeout the handler raised past the pool's): the
//    statement is cancelled before its connection is closed, so no backend still runs it once
//    the client has its 503 (pg_stat_activity), in a plain route (said "may have run and
//    committed") and in a route transaction (not said; nothing committed).
import { expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { noteTable } from '../../../support/note-table.js'

const fx = noteTable()
const slow = 'select g, pg_sleep(case when g = 3 then 3 else 0 end) from generate_series(1, 5) g'

test("the server's statement_timeout in every query form: a retryable 503, nothing committed", async () => {
  fx.current = await coreApp(fx.db.directUrl, { max: 2, statementTimeout: 1_000 })
  const { app } = fx.current
  app.post('/begin', async (request) => {
    await request.db.begin(async (tx) => {
      await tx`insert into note values ('begin')`
      await tx`select pg_sleep(3)`
    })
    return { ok: true }
  })
  app.post('/savepoint', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into note values ('outer')`
    await request.db.savepoint(async (sp) => {
      await sp`select pg_sleep(3)`
    })
    return { ok: true }
  })
  app.get('/cursor', async (request) => {
    let n = 0
    for await (const rows of request.db.unsafe(slow).cursor(1)) n += rows.length
    return { n }
  })
  app.get('/for-each', async (request) => {
    let n = 0
    await request.db.unsafe(slow, []).forEach(() => {
      n++
    })
    return { n }
  })
  app.get('/copy', async (request, reply) => {
    reply.type('text/plain')
    return request.db.unsafe(`copy (${slow}) to stdout`).readable()
  })
  await app.ready()
  for (const [method, url] of [
    ['POST', '/begin'],
    ['POST', '/savepoint'],
    ['GET', '/cursor'],
    ['GET', '/for-each'],
    ['GET', '/copy'],
  ] as const) {
    const res = await app.inject({ method, url })
    expect(res.statusCode, `${url}: ${res.body}`).toBe(503)
    expect(res.json().code, url).toBe('FST_PG_POOL_QUERY_TIMEOUT')
    expect(res.headers['retry-after'], url).toBe('1')
  }
  expect(await fx.notes()).toEqual([])
  expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
})

test('the client-side deadline: cancelled on the server before the 503, in doubt only outside a transaction', async () => {
  fx.current = await coreApp(fx.db.directUrl, { max: 2, statementTimeout: 1_000 })
  const { app, applicationName } = fx.current
  app.post('/plain', async (request) => {
    await request.db`set statement_timeout = '30s'`
    await request.db`insert into note select 'plain' from pg_sleep(6)`
    return { ok: true }
  })
  app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`set local statement_timeout = '30s'`
    await request.db`insert into note select 'tx' from pg_sleep(6)`
    return { ok: true }
  })
  await app.ready()
  const running = async () =>
    (
      await fx.db.admin<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
        where application_name = ${applicationName} and state = 'active' and query like '%pg_sleep(6)%'`
    )[0]?.n ?? -1
  for (const url of ['/plain', '/tx']) {
    const res = await app.inject({ method: 'POST', url })
    expect(res.statusCode, `${url}: ${res.body}`).toBe(503)
    expect(res.json().code, url).toBe('FST_PG_POOL_QUERY_TIMEOUT')
    expect(res.headers['retry-after'], url).toBe('1')
    // On /plain the in-doubt wording is there when the 503 goes before the server's answer to the
    // cancel, and rightly absent once its 57014 was read (seen on a loaded machine): which comes
    // first is timing. Never inside the route's transaction; nothing committed either way (below).
    if (url === '/tx') expect(res.json().message).not.toMatch(/may have/)
    // The cancel went before the close: the backend stops now, not at its own 30 s.
    expect(await waitFor(async () => (await running()) === 0, 3_000), url).toBe(true)
  }
  expect(await fx.notes()).toEqual([])
})

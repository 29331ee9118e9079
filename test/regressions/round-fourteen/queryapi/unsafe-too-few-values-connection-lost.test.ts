import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { noteTable } from '../../../support/note-table.js'

// DEFECT (probe-queryapi, medium): `request.db.unsafe(text, values)` (the migration guide's way to
// keep pg's `$1` strings) given fewer values than the text has placeholders: PostgreSQL refuses
// the Bind message with an ERROR of SQLSTATE 08P01 (protocol_violation: "bind message supplies 1
// parameters, but prepared statement "" requires 2") and the session goes on. The suite reads any
// class-08 SQLSTATE as a lost connection (error-mapping.ts isConnectionError): the client gets a
// 503 FST_PG_POOL_CONNECTION_LOST with Retry-After for a handler bug that fails the same way on
// every retry, and the pool closes a healthy connection (close 'error', a new backend each time).
// The same mistake with one value too many is a 500 42P18, the connection kept. A client that
// decides how many values the handler passes (`unsafe(text, request.body.values)`) makes the pool
// reconnect once per request.
// Expected: a 500 of the statement's own (its SQLSTATE, no Retry-After), the connection kept.

const fx = noteTable()
failOnProcessErrors()

test('unsafe() with too few values: a 500 of its own, no Retry-After, the connection kept', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  const closes: string[] = []
  app.pgPool.on('close', (reason) => closes.push(String(reason)))
  app.get('/pid', async (request) => request.db`select pg_backend_pid() as pid`)
  app.get('/few', async (request) => request.db.unsafe('select $1::int as a, $2::int as b', [1]))
  app.get('/many', async (request) => request.db.unsafe('select $1::int as a', [1, 2]))
  const pid = async () => ((await app.inject('/pid')).json() as { pid: number }[])[0]?.pid
  const before = await pid()

  const many = await app.inject('/many')
  expect(many.statusCode).toBe(500)
  expect(many.json().code).toBe('42P18')

  const few = await app.inject('/few')
  expect({ status: few.statusCode, code: few.json().code, retryAfter: few.headers['retry-after'] }).toEqual({
    status: 500,
    code: '08P01',
    retryAfter: undefined,
  })
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  expect(await pid(), 'the same backend serves the next request').toBe(before)
  expect(closes).toEqual([])
})

test('in a route transaction, caught by the handler: the transaction fails as after any statement error, the connection is kept', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  const closes: string[] = []
  app.pgPool.on('close', (reason) => closes.push(String(reason)))
  app.get('/pid', async (request) => request.db`select pg_backend_pid() as pid`)
  app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into note values ('tx')`
    const code = await request.db.unsafe('select $1::int as a, $2::int as b', [1]).then(
      () => 'ran',
      (error: { code?: string }) => error.code,
    )
    return { code }
  })
  const pid = async () => ((await app.inject('/pid')).json() as { pid: number }[])[0]?.pid
  const before = await pid()
  const res = await app.inject({ method: 'POST', url: '/tx' })
  expect(res.statusCode).toBe(500)
  expect(res.json().code).toBe('FST_PG_POOL_COMMIT_FAILED')
  expect(res.headers['retry-after']).toBeUndefined()
  expect(await fx.notes()).toEqual([])
  expect(await pid()).toBe(before)
  expect(closes).toEqual([])
})

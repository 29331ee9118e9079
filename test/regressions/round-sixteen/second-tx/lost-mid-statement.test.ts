// DEFECT (second-tx, round sixteen): a route transaction (or a begin() block) whose connection the
// server or the network closed UNDER a statement answered 500 FST_PG_POOL_COMMIT_FAILED, not the
// retryable 503 FST_PG_POOL_CONNECTION_LOST that 63685a9/7e9177d and the README promise for "the
// connection was lost before the COMMIT could be sent (... a network cut)".
// What the user does: a handler that treats a statement as optional (`.catch(() => null)`), or
// a begin() callback that catches; the backend is pg_terminate_backend'ed (failover tooling, an
// admin) or the network is cut while that statement runs. Nothing was committed; a retry is safe.
// What they saw: 500 "The transaction was not committed (the connection was lost)" without
// Retry-After (clients and load balancers do not retry a 500), while the same loss a moment
// earlier (nothing in flight) answers 503.
// Cause: ServerConnection.closedByPeer is set only when postgres.js's onclose comes before anyone
// marked the connection closed; the lease marks it closed itself on the statement's lost-connection
// error (lease.ts, the query's end: `isConnectionError(error) ... markClosed('error')`), which runs
// first, so the close reads as the pool's own decision.
import pgPoolCore, { type RequestDb } from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterEach, expect, test } from 'vitest'
import type { TestApp } from '../../../support/app.js'
import { sleep, waitFor } from '../../../support/database.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'
import { transactionFixture, tx } from '../../../support/transaction-fixture.js'

const fx = transactionFixture()
let proxy: TcpProxy | undefined
let extra: TestApp | undefined
afterEach(async () => {
  await extra?.app.close()
  extra = undefined
  await proxy?.close()
  proxy = undefined
})

/** Terminates the backend running pg_sleep for application `name`, once it runs. */
async function terminateSleeper(name: string): Promise<void> {
  const sql = fx.db.sql
  const found = await waitFor(async () => {
    const rows =
      await sql`select pid from pg_stat_activity where application_name = ${name} and query like '%pg_sleep%' and state = 'active'`
    return rows.length > 0
  }, 10_000)
  expect(found).toBe(true)
  await sql`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${name} and query like '%pg_sleep%'`
}

test('route transaction: backend terminated under a statement the handler caught: 503 CONNECTION_LOST', async () => {
  const { app, applicationName } = fx.current
  app.post('/t', tx, async (request) => {
    await request.db`insert into note values ('lost')`
    await request.db`select pg_sleep(30)`.catch(() => {})
    return { ok: true }
  })
  const pending = app.inject({ method: 'POST', url: '/t' })
  await terminateSleeper(applicationName)
  const res = await pending
  expect({ status: res.statusCode, code: res.json().code, notes: await fx.notes() }).toEqual({
    status: 503,
    code: 'FST_PG_POOL_CONNECTION_LOST',
    notes: [],
  })
})

test('begin() block: backend terminated under a statement the callback caught: 503 CONNECTION_LOST', async () => {
  const { app, applicationName } = fx.current
  app.post('/b', async (request) => {
    await request.db.begin(async (t) => {
      await t`insert into note values ('lost')`
      await t`select pg_sleep(30)`.catch(() => {})
    })
    return { ok: true }
  })
  const pending = app.inject({ method: 'POST', url: '/b' })
  await terminateSleeper(applicationName)
  const res = await pending
  expect({ status: res.statusCode, code: res.json().code, notes: await fx.notes() }).toEqual({
    status: 503,
    code: 'FST_PG_POOL_CONNECTION_LOST',
    notes: [],
  })
})

test('route transaction: network cut while the handler waits, then while a statement runs (caught): 503 both', async () => {
  proxy = await startTcpProxy(Number(new URL(fx.db.url).port))
  const parsed = new URL(fx.db.url)
  let closes = 0
  const app = Fastify()
  extra = { app, applicationName: '', logs: [] }
  await app.register(pgPoolCore, {
    connection: {
      host: '127.0.0.1',
      port: proxy.port,
      database: decodeURIComponent(parsed.pathname.slice(1)),
      user: decodeURIComponent(parsed.username),
      ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
      onclose: () => {
        closes++
      },
    },
    pool: { max: 1, acquireTimeout: 1000 },
  })
  const p = proxy
  let phase = ''
  app.post('/idle', tx, async (request) => {
    await request.db`insert into note values ('idle')`
    phase = 'waiting'
    await waitFor(() => phase === 'cut', 10_000)
    return { ok: true }
  })
  app.post('/busy', tx, async (request) => {
    await request.db`insert into note values ('busy')`
    const q = (request.db as RequestDb)`select pg_sleep(30)`.catch((e: { code?: string }) => e.code)
    await sleep(100)
    p.cutAll()
    await q
    return { ok: true }
  })
  const pending = app.inject({ method: 'POST', url: '/idle' })
  await waitFor(() => phase === 'waiting', 10_000)
  p.cutAll()
  // The pool saw the connection close (postgres.js's onclose runs after the pool's).
  expect(await waitFor(() => closes > 0, 10_000)).toBe(true)
  phase = 'cut'
  const idle = await pending
  const busy = await app.inject({ method: 'POST', url: '/busy' })
  expect({
    idle: [idle.statusCode, idle.json().code],
    busy: [busy.statusCode, busy.json().code],
    notes: await fx.notes(),
  }).toEqual({
    idle: [503, 'FST_PG_POOL_CONNECTION_LOST'],
    busy: [503, 'FST_PG_POOL_CONNECTION_LOST'],
    notes: [],
  })
})

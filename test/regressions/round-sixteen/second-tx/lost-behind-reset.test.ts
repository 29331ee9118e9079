// DEFECT (second-tx, round sixteen): the network cut while the session reset of the previous
// request is out (the next request's statements are written behind it): that route transaction's
// statement fails as a lost connection (503 CONNECTION_LOST when not caught), but a handler that
// caught it got 500 FST_PG_POOL_COMMIT_FAILED without Retry-After at its COMMIT, not the retryable
// 503 the README promises for a connection a network cut lost before the COMMIT.
// Cause: ServerConnection.queueReset marked the connection closed itself on the reset's failure
// (markClosed('error')) before postgres.js's onclose, so closedByPeer read false: the pool's own
// decision. Only a refusal by the server is that (its statements are then sent again elsewhere).
import { afterEach, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'
import { transactionFixture, tx } from '../../../support/transaction-fixture.js'

const fx = transactionFixture()
let proxy: TcpProxy | undefined
let extra: TestApp | undefined
afterEach(async () => {
  await extra?.app.close()
  await proxy?.close()
})

test('a cut while the reset is out: the route transaction behind it that caught its lost statement answers the retryable 503', async () => {
  proxy = await startTcpProxy(Number(new URL(fx.db.url).port))
  extra = await coreApp(proxy.urlFor(fx.db.url), { max: 1, acquireTimeout: 5000 })
  const p = proxy
  const { app } = extra
  let release = () => {}
  const gate = new Promise<void>((r) => (release = r))
  let armed = false
  p.onClientData = (chunk) => {
    const text = chunk.toString('latin1')
    if (armed && /fastify_pg_pool_reset_/.test(text)) {
      armed = false
      p.cutAll()
    }
  }
  const errors: string[] = []
  app.post('/first', async (request) => {
    await request.db`select 1`
    await gate
    return { ok: true }
  })
  app.post('/second', tx, async (request) => {
    await request.db`insert into note values ('second')`.catch((e: { code?: string }) => errors.push(String(e.code)))
    return { ok: true }
  })
  const first = app.inject({ method: 'POST', url: '/first' })
  expect(await waitFor(() => app.pgPool.stats().leased === 1)).toBe(true)
  const second = app.inject({ method: 'POST', url: '/second' })
  expect(await waitFor(() => app.pgPool.stats().waiting === 1)).toBe(true)
  armed = true
  release()
  const [a, b] = await Promise.all([first, second])
  // Before the fix: b [500, 'FST_PG_POOL_COMMIT_FAILED'].
  expect({ a: a.statusCode, b: [b.statusCode, b.json().code], retry: b.headers['retry-after'] !== undefined }).toEqual({
    a: 200,
    b: [503, 'FST_PG_POOL_CONNECTION_LOST'],
    retry: true,
  })
  expect({ errors, notes: await fx.notes() }).toEqual({ errors: ['FST_PG_POOL_CONNECTION_LOST'], notes: [] })
})

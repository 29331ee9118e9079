// DOCS (second-tx, round sixteen): 63685a9 made a route transaction whose connection was lost
// before its COMMIT answer 503 FST_PG_POOL_CONNECTION_LOST with Retry-After, and its README line said
// "nothing was committed and running the request again is safe". A handler that also writes on
// `request.dbs.<name>` (a named instance: never part of request.db's route transaction, each
// statement there commits on its own) gets that 503 with its named-instance write committed: a
// client or load balancer that retries on the promised Retry-After writes it a second time.
// What this pins: the 503 (the route transaction itself is safe to retry) and the named instance's
// write committed once per attempt, as the README now says.
import pgPoolCore, { type RequestDb } from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { expect, onTestFinished, test } from 'vitest'
import { waitFor } from '../../../support/database.js'
import { transactionFixture, tx } from '../../../support/transaction-fixture.js'
import { connectionSeeingCloses } from '../close-watch-kit.js'

const fx = transactionFixture()

test('route transaction lost before COMMIT beside a named-instance write: 503, the named write stays, a retry repeats it', async () => {
  const watched = connectionSeeingCloses(fx.db.url)
  const app = Fastify()
  await app.register(pgPoolCore, {
    connection: watched.connection,
    pool: { max: 1 },
  })
  await app.register(pgPoolCore, { name: 'billing', connection: fx.db.url, pool: { max: 1 } })
  onTestFinished(() => app.close())
  app.post('/checkout', tx, async (request) => {
    const billing = (request.dbs as Record<string, RequestDb>).billing as RequestDb
    await billing`insert into note values ('invoice')`
    await request.db`insert into note values ('order')`
    await request.db`set local idle_in_transaction_session_timeout = '100ms'`
    // Wait until the server ended the session (the pool saw its connection close).
    const seen = watched.closes()
    expect(await waitFor(() => watched.closes() > seen, 10_000)).toBe(true)
    return { ok: true }
  })
  for (let attempt = 0; attempt < 2; attempt++) {
    const res = await app.inject({ method: 'POST', url: '/checkout' })
    expect({ status: res.statusCode, code: res.json().code, retry: res.headers['retry-after'] !== undefined }).toEqual({
      status: 503,
      code: 'FST_PG_POOL_CONNECTION_LOST',
      retry: true,
    })
  }
  expect((await fx.notes()).sort()).toEqual(['invoice', 'invoice'])
})

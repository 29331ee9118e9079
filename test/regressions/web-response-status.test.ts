import { expect, test } from 'vitest'
import { waitFor } from '../support/database.js'
import { transactionFixture } from '../support/transaction-fixture.js'

// Found by hostile probing, second round (failed before the fix): a route transaction whose handler returns a web
// `Response` (supported by Fastify 5: its status, headers and body become the reply's) with a
// status >= 400 COMMITS its work.
//
// Expected: packages/core/README.md l.26-27 "rolled back ... on any reply with status >= 400";
// docs/migrating-from-fastify-postgres.md l.236 "Any reply >= 400 rolls back, whether the handler
// threw or not".
//
// What happened before the fix: the core decides in onSend from reply.statusCode (request-lease.ts
// endMode), which is still 200 there: Fastify applies `payload.status` of a Response only in
// onSendEnd, after every onSend hook (fastify/lib/reply.js onSendEnd, "[object Response]"). The
// client gets 409 and the work is committed.

const fixture = transactionFixture({ deferred: false })

test('return new Response(body, { status: 409 }) on a transaction route rolls back', async () => {
  const { app } = fixture.current
  app.post('/orders', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into note values ('half')`
    return new Response(JSON.stringify({ error: 'conflict' }), {
      status: 409,
      headers: { 'content-type': 'application/json' },
    })
  })
  const response = await app.inject({ method: 'POST', url: '/orders' })
  expect(response.statusCode).toBe(409)
  await waitFor(() => app.pgPool.stats().leased === 0)
  expect(await fixture.notes()).toEqual([]) // before the fix: ['half'] (committed)
})

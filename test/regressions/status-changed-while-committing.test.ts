import { describe, expect, test } from 'vitest'
import { waitFor } from '../support/database.js'
import { transactionFixture, tx } from '../support/transaction-fixture.js'

// Found by hostile probing, second round (failed before the fix): the status of a reply can change while its onSend
// waits for the COMMIT/ROLLBACK, and the payload then goes out with the new status.
//
// Expected (packages/core/README.md "Route transactions: COMMIT before the first byte"): "A client
// never receives a 2xx status for work that is not committed", and "`reply.send(x)` and then
// `return y` (or a second `reply.send`): the first payload goes after the COMMIT; the second is
// dropped with a warning in the log, as Fastify drops a send after the reply." Plain Fastify writes
// the first payload with the status it was sent with.
//
// What happened before the fix: the core's onSend decides COMMIT or ROLLBACK from reply.statusCode at the
// first send (request-lease.ts endMode, in onSend) and calls Fastify's done later; Fastify's
// onSendEnd (fastify/lib/reply.js onSendEnd: `const statusCode = res.statusCode`) reads the status
// only then. Anything that sets the status meanwhile wins: `return reply.code(201).send(y)` after a
// forgotten `return` on `reply.code(409).send(x)` makes the client receive 201 for work that was
// ROLLED BACK; a handler that throws after reply.send(x) gets x with the error handler's 500
// although x's work was COMMITTED (a client retries committed work). The second send is dropped
// (kSending) but its reply.code() was not.

const fixture = transactionFixture({ deferred: false })

describe('the status is changed while the first send waits for the database', () => {
  test('reply.code(409).send(x) without return, then return reply.code(201).send(y): never a 2xx for rolled-back work', async () => {
    const { app } = fixture.current
    app.post('/orders', tx, async (request, reply) => {
      await request.db`insert into note values ('order')`
      reply.code(409).send({ error: 'conflict' }) // the forgotten `return`
      return reply.code(201).send({ created: true })
    })
    const response = await app.inject({ method: 'POST', url: '/orders' })
    await waitFor(() => app.pgPool.stats().leased === 0)
    expect(await fixture.notes()).toEqual([]) // rolled back (409 decided it)
    expect(response.statusCode).toBe(409) // before the fix: 201 with body {"error":"conflict"}
  })

  test('reply.send(x) then throw: x goes out with the status it was committed with', async () => {
    const { app } = fixture.current
    app.post('/orders', tx, async (request, reply) => {
      await request.db`insert into note values ('order')`
      reply.send({ ok: true })
      throw new Error('after the send')
    })
    const response = await app.inject({ method: 'POST', url: '/orders' })
    await waitFor(() => app.pgPool.stats().leased === 0)
    expect(await fixture.notes()).toEqual(['order']) // committed (the first send decided it)
    expect(response.json()).toEqual({ ok: true })
    expect(response.statusCode).toBe(200) // before the fix: 500 (the error handler's code) for committed work
  })
})

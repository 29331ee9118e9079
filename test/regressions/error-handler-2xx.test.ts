import { describe, expect, test } from 'vitest'
import { transactionFixture, tx } from '../support/transaction-fixture.js'

// Found by hostile probing (failed before the fix): on a route transaction, a thrown error commits the transaction when an error handler
// answers it with a status below 400.
//
// Expected (packages/core/README.md l.26-27): "One transaction per request: committed before the
// response is sent, rolled back on a thrown error, on any reply with status >= 400, and when the
// client hangs up." docs/migrating-from-fastify-postgres.md l.236-237 says @fastify/postgres
// "rolls back ... in onError (a thrown error)"; this suite is presented as a superset of that.
//
// What happened before the fix: the core never looks at thrown errors; it decides COMMIT or ROLLBACK in
// onSend from `reply.statusCode >= 400` alone (request-lease.ts:288). An error handler that
// maps errors to 200 bodies (`{ ok: false, error }`, GraphQL-style APIs) or to a 3xx redirect
// makes the half-done work of a handler that threw be committed.

const fixture = transactionFixture({ deferred: false })

describe('a thrown error on a route transaction', () => {
  test('an error handler replying 200 { ok: false }: the half-done work is rolled back', async () => {
    const { app } = fixture.current
    app.setErrorHandler((error, _request, reply) => {
      reply.code(200).send({ ok: false, message: (error as Error).message })
    })
    app.post('/transfer', tx, async (request) => {
      await request.db`insert into note values ('debited')`
      throw new Error('the credit side failed')
    })
    const response = await app.inject({ method: 'POST', url: '/transfer' })
    expect(response.json()).toEqual({ ok: false, message: 'the credit side failed' })
    expect(await fixture.notes()).toEqual([]) // before the fix: ['debited'] (committed)
    expect(app.pgPool.stats().leased).toBe(0)
  })

  test('an error handler redirecting (303): the half-done work is rolled back', async () => {
    const { app } = fixture.current
    app.setErrorHandler((_error, _request, reply) => {
      reply.redirect('/error-page', 303)
    })
    app.post('/form', tx, async (request) => {
      await request.db`insert into note values ('half')`
      throw new Error('validation in the handler failed')
    })
    const response = await app.inject({ method: 'POST', url: '/form' })
    expect(response.statusCode).toBe(303)
    expect(await fixture.notes()).toEqual([]) // before the fix: ['half'] (committed)
  })
})

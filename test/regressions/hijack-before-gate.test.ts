import type { FastifyReply, FastifyRequest } from 'fastify'
import { describe, expect, test } from 'vitest'
import type { TestApp } from '../support/app.js'
import { waitFor } from '../support/database.js'
import { listen } from '../support/http.js'
import { transactionFixture, tx } from '../support/transaction-fixture.js'

// Found by hostile probing (failed before the fix): on a transaction route, reply.hijack() called from any hook that runs before the
// route's last preHandler (a global onRequest/preValidation/preHandler hook, or the route's own
// `preHandler` option) is not gated: the raw 200 leaves before the COMMIT, and a COMMIT that then
// fails is only logged. The client got 200 for work that was never committed.
//
// Expected (packages/core/README.md l.219 and l.232-234): "A client never receives a 2xx status
// for work that is not committed ... With reply.hijack(), the first write to reply.raw
// (writeHead, write, end) waits for the COMMIT ...; if the COMMIT fails, the client gets the 500
// instead". Fastify allows hijacking from hooks (its Hooks docs: "reply.hijack() ... in hooks").
//
// What happened before the fix: the gate is installed by wrapping reply.hijack in a preHandler that the
// core's onRoute hook appends after the route's own preHandlers (request-lease.ts:254-283).
// Global hooks and route-level preHandlers run before it: their hijack is Fastify's own, the raw
// writes go straight out, and the COMMIT happens later in onResponse, whose failure is only
// logged (request-lease.ts:371).

const fixture = transactionFixture({ deferred: true })

/** Work whose COMMIT fails (a deferred foreign key), then a hijacked raw 200. */
const hijackAfterWork = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
  await request.db`insert into note values ('hijacked')`
  await request.db`insert into child values (1, 999)`
  reply.hijack()
  reply.raw.writeHead(200, { 'content-type': 'text/plain' })
  reply.raw.end('done')
}

async function post(app: TestApp['app'], url: string): Promise<{ status: number; body: string }> {
  const base = await listen(app)
  const response = await fetch(`${base}${url}`, { method: 'POST' })
  const body = await response.text()
  await waitFor(() => app.pgPool.stats().leased === 0)
  return { status: response.status, body }
}

describe('reply.hijack() before the gate', () => {
  test("in the route's own preHandler option", async () => {
    const { app } = fixture.current
    app.post('/route-prehandler', { ...tx, preHandler: hijackAfterWork }, async () => 'never')
    const { status } = await post(app, '/route-prehandler')
    expect(await fixture.notes()).toEqual([]) // the COMMIT failed: nothing committed
    expect(status).toBe(500) // before the fix: 200
  })

  test('in a global preHandler hook', async () => {
    const { app } = fixture.current
    app.addHook('preHandler', async (request, reply) => {
      if (request.url === '/global-prehandler') await hijackAfterWork(request, reply)
    })
    app.post('/global-prehandler', tx, async () => 'never')
    const { status } = await post(app, '/global-prehandler')
    expect(await fixture.notes()).toEqual([])
    expect(status).toBe(500) // before the fix: 200
  })

  test('in a global onRequest hook', async () => {
    const { app } = fixture.current
    app.addHook('onRequest', async (request, reply) => {
      if (request.url === '/on-request') await hijackAfterWork(request, reply)
    })
    app.post('/on-request', tx, async () => 'never')
    const { status } = await post(app, '/on-request')
    expect(await fixture.notes()).toEqual([])
    expect(status).toBe(500) // before the fix: 200
  })
})

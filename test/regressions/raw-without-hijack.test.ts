import { expect, test } from 'vitest'
import { waitFor } from '../support/database.js'
import { listen } from '../support/http.js'
import { transactionFixture } from '../support/transaction-fixture.js'

// Found by hostile probing (unusual Fastify usage; failed before the fix): a transaction route that writes its response on reply.raw
// without reply.hijack() sends its 2xx before the COMMIT; a COMMIT that fails is only logged.
//
// Expected (packages/core/README.md l.217-219): "The COMMIT runs in onSend, before the first
// byte of any payload leaves ... A client never receives a 2xx status for work that is not
// committed". Fastify documents reply.raw as usable (at the user's risk), and a handler that
// ends reply.raw never reaches onSend; the gate the core puts on hijacked replies would cover
// this too, but it is only installed when reply.hijack() is called.
//
// What happened before the fix: no onSend runs; the backstop in onResponse (request-lease.ts:365-372)
// commits after the response has finished, and its failure goes to the log only.
// Rarer than the others (Fastify warns against writing reply.raw without
// hijack), but the promise is unconditional and the core already has the gate to keep it.

const fixture = transactionFixture({ deferred: true })

test('reply.raw.end() without hijack on a transaction route: never a 2xx for a failed COMMIT', async () => {
  const { app } = fixture.current
  app.post('/raw', { config: { db: { transaction: true } } }, async (request, reply) => {
    await request.db`insert into note values ('raw')`
    await request.db`insert into child values (1, 999)` // the COMMIT will fail
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.end('done')
  })
  const base = await listen(app)
  const response = await fetch(`${base}/raw`, { method: 'POST' })
  await response.text()
  await waitFor(() => app.pgPool.stats().leased === 0)
  expect(await fixture.notes()).toEqual([])
  expect(response.status).not.toBe(200) // before the fix: 200
})

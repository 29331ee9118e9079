import { expect, test } from 'vitest'
import { waitFor } from '../support/database.js'
import { listen } from '../support/http.js'
import { transactionFixture, tx } from '../support/transaction-fixture.js'

// From hostile probing (second round, held) (packages/core/README.md, "Route transactions:
// COMMIT before the first byte").

const fixture = transactionFixture({ deferred: true })

test("Fastify's automatic HEAD route of a transaction GET: answered 200 after its COMMIT", async () => {
  const { app } = fixture.current
  app.get('/h', tx, async (request) => {
    await request.db`insert into note values ('head')`
    return { ok: true }
  })
  const base = await listen(app)
  const response = await fetch(`${base}/h`, { method: 'HEAD' })
  expect(response.status).toBe(200)
  await waitFor(() => app.pgPool.stats().leased === 0)
  expect(await fixture.notes()).toEqual(['head'])
})

test('an error thrown in preSerialization, error handler answers 200: rolled back', async () => {
  const { app } = fixture.current
  app.setErrorHandler((error, _request, reply) => {
    reply.code(200).send({ ok: false, message: (error as Error).message })
  })
  let thrown = false
  const once = async (_request: unknown, _reply: unknown, payload: unknown) => {
    if (thrown) return payload
    thrown = true
    throw new Error('serialize') // once: the error handler's own payload goes through preSerialization too
  }
  app.post('/p', { ...tx, preSerialization: once }, async (request) => {
    await request.db`insert into note values ('p')`
    return { ok: true }
  })
  const response = await app.inject({ method: 'POST', url: '/p' })
  expect(response.json()).toEqual({ ok: false, message: 'serialize' })
  await waitFor(() => app.pgPool.stats().leased === 0)
  expect(await fixture.notes()).toEqual([])
})

test('an app onSend hook added after the core (so running after its COMMIT) throws once: one 500 answer, lease back', async () => {
  const { app } = fixture.current
  let thrown = false
  app.addHook('onSend', async (_request, _reply, payload) => {
    if (!thrown) {
      thrown = true
      throw new Error('compress failed')
    }
    return payload
  })
  app.post('/o', tx, async (request) => {
    await request.db`insert into note values ('o')`
    return { ok: true }
  })
  const response = await app.inject({ method: 'POST', url: '/o' })
  await waitFor(() => app.pgPool.stats().leased === 0)
  // The core's onSend committed first; the later hook failed: a 500 for committed work does not break
  // the promise (never a 2xx for uncommitted work). One answer, no crash, lease back.
  expect(response.statusCode).toBe(500)
  expect(await fixture.notes()).toEqual(['o'])
})

test('an async error handler that queries request.db on a transaction route: its write rolls back with the route, lease back', async () => {
  const { app } = fixture.current
  app.setErrorHandler(async (error, request, reply) => {
    await request.db`insert into note values ('audit')`
    return reply.code(422).send({ message: (error as Error).message })
  })
  app.post('/e', tx, async (request) => {
    await request.db`insert into note values ('half')`
    throw new Error('bad')
  })
  const response = await app.inject({ method: 'POST', url: '/e' })
  expect(response.statusCode).toBe(422)
  await waitFor(() => app.pgPool.stats().leased === 0)
  expect(await fixture.notes()).toEqual([])
})

test("a route with method ['GET', 'POST']: reply.raw written without hijack waits for a failing COMMIT on both", async () => {
  const { app } = fixture.current
  app.route({
    method: ['GET', 'POST'],
    url: '/m',
    ...tx,
    handler: async (request, reply) => {
      await request.db`insert into note values ('m')`
      await request.db`insert into child values (1, 999)` // the COMMIT fails
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.end('done')
    },
  })
  const base = await listen(app)
  for (const method of ['GET', 'POST']) {
    const response = await fetch(`${base}/m`, { method })
    await response.text()
    expect(response.status).toBe(500)
  }
  await waitFor(() => app.pgPool.stats().leased === 0)
  expect(await fixture.notes()).toEqual([])
})

test('hijack then reply.send() with nothing written (the client gives up): rolled back, lease back', async () => {
  const { app } = fixture.current
  app.post('/hj', tx, async (request, reply) => {
    await request.db`insert into note values ('hj')`
    reply.hijack()
    reply.send({ ok: true }) // Fastify ignores it (hijacked): nothing is written, as in plain Fastify
  })
  const base = await listen(app)
  await expect(fetch(`${base}/hj`, { method: 'POST', signal: AbortSignal.timeout(1000) })).rejects.toThrow()
  await waitFor(() => app.pgPool.stats().leased === 0)
  expect(await fixture.notes()).toEqual([])
})

test('hijack, reply.raw.write without writeHead (status 200 by default), failing COMMIT: 500', async () => {
  const { app } = fixture.current
  app.post('/w', tx, async (request, reply) => {
    await request.db`insert into note values ('w')`
    await request.db`insert into child values (1, 999)`
    reply.hijack()
    reply.raw.setHeader('content-type', 'text/plain')
    reply.raw.write('part 1 ')
    reply.raw.end('part 2')
  })
  const base = await listen(app)
  const response = await fetch(`${base}/w`, { method: 'POST' })
  const body = await response.text()
  expect(response.status).toBe(500)
  expect(body).not.toContain('part')
  await waitFor(() => app.pgPool.stats().leased === 0)
  expect(await fixture.notes()).toEqual([])
})

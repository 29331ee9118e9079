import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolCore, { channels, type RefusalMessage } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../../../support/database.js'
import { listen, rawExchange, startRequest } from '../../../support/http.js'

// What the user does: `pool: { max: 1, maxWaiting: 0 }` (no queue: refuse rather than wait), with
// a pipelined route (`config.db.pipeline`) and an ordinary route that takes an upload. While a
// pipelined request holds the one connection (shared), a client starts a large POST to the
// ordinary route.
// What the backpressure README says: "With `maxWaiting: 0` (no queue), a request is refused when
// every connection is leased (or is being opened for an earlier request), unless it is pipelined
// and a shared connection has room", and the check is "one synchronous check in an onRequest
// hook, before the body is read or parsed".
// What they got: the exclusive request is admitted at the door (admission asks the core's
// wouldRefuse as if every request were pipelined), its whole upload is read and parsed, and only
// then does the core refuse it (FST_PG_POOL_QUEUE_FULL from its own wait()). A client that sent
// the headers and part of the body got no answer at all until the body was complete, and the
// refusal was never published as shed (pg_pool_requests_shed_total stayed at 0).

let db: TestDatabase
let app: FastifyInstance | undefined
/** Ends the pipelined request's hold (also after a failed assertion: close waits for it). */
let release: () => void = () => {}
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  release()
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

test('maxWaiting 0: an exclusive route is refused at the door while a pipelined request shares the only connection', async () => {
  const instance = Fastify()
  app = instance
  await instance.register(pgPoolCore, {
    connection: db.url,
    pool: { max: 1, maxWaiting: 0, applicationName: uniqueName() },
  })
  await instance.register(pgPoolBackpressure, { retryStorm: false, process: false })
  const shed: string[] = []
  const onRefusal = (message: unknown) => {
    const refusal = message as RefusalMessage
    if (refusal.pool === instance.pgPool) shed.push(`${refusal.route} ${refusal.reason}`)
  }
  channels.refusal.subscribe(onRefusal)
  instance.addHook('onClose', async () => {
    channels.refusal.unsubscribe(onRefusal)
  })
  const held = new Promise<void>((resolve) => {
    release = resolve
  })
  instance.get('/shared', { config: { db: { pipeline: true } } }, async (request) => {
    await request.db`select 1`
    await held
    return { ok: true }
  })
  instance.post('/upload', async (request) => {
    await request.db`select 1`
    return { ok: true }
  })
  const base = await listen(instance)
  const port = Number(new URL(base).port)

  const sharing = startRequest(`${base}/shared`)
  await waitUntil(() => instance.pgPool.stats().pipelined === 1, 'the pipelined request on the only connection')
  expect(instance.pgPool.stats()).toMatchObject({ max: 1, leased: 1, shared: 1, waiting: 0, waitingCap: 0 })

  // Headers and the first bytes of a 100 kB upload: the refusal must not wait for the rest.
  const wire =
    'POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n' +
    'Content-Length: 100000\r\nConnection: close\r\n\r\n{"x":"'
  const upload = await rawExchange(port, wire, 5_000)
  expect(upload.how).not.toBe('no end')
  expect(upload.text).toMatch(/^HTTP\/1\.1 503 /)
  expect(upload.text).toMatch(/\r\nretry-after: \d+\r\n/i)
  expect(upload.text).toContain('"code":"FST_PG_POOL_QUEUE_FULL"')
  expect(shed).toEqual(['/upload queue_full'])

  // The exception the README names still holds: a pipelined request joins the shared connection.
  const second = startRequest(`${base}/shared`)
  await waitUntil(() => instance.pgPool.stats().pipelined === 2, 'a second pipelined request sharing the connection')
  release()
  expect(await sharing.done).toBe(200)
  expect(await second.done).toBe(200)
  expect(shed).toEqual(['/upload queue_full'])
}, 30_000)

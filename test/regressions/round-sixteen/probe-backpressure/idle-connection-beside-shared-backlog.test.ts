import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolCore, { channels, type RefusalMessage } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import type postgres from 'postgres'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, uniqueName, waitUntil } from '../../../support/database.js'
import { listen, startRequest } from '../../../support/http.js'

// What the user does: a pool of 2 serving ordinary routes and pipelined ones (`config.db.pipeline`).
// A slow pipelined statement (here: waiting for an advisory lock) holds up the pipelined requests
// queued behind it on their shared connection, while the other connection, back from an ordinary
// request, sits idle.
// What they should get: a request that arrives then takes the idle connection at once (the core
// gives it; a pipelined request takes an idle connection before joining a shared one). The
// backpressure README: "A request that finds nobody waiting is always admitted (it waits for one
// lease at most), so the pool is never idle while work arrives".
// What they got: 503 FST_PG_POOL_OVERLOADED ("Requests would wait too long for a database
// connection") for every route, ordinary and pipelined, for as long as the shared connection's
// backlog lasted, with a connection idle and nobody waiting for one: admission counted the
// statements queued on the shared connection as work ahead of every arriving request.

const LOCK = 716_204

let db: TestDatabase
let app: FastifyInstance | undefined
let locker: postgres.ReservedSql | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  if (locker !== undefined) {
    await locker`select pg_advisory_unlock_all()`
    locker.release()
    locker = undefined
  }
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

test('an idle connection serves arriving requests while a shared connection has a backlog', async () => {
  const instance = Fastify()
  app = instance
  await instance.register(pgPoolCore, { connection: db.url, pool: { max: 2, applicationName: uniqueName() } })
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
  let release: () => void = () => {}
  instance.get('/exclusive/hold', async (request) => {
    await request.db`select 1`
    await new Promise<void>((resolve) => {
      release = resolve
    })
    return { ok: true }
  })
  instance.get('/exclusive', async (request) => {
    await request.db`select 1`
    return { ok: true }
  })
  instance.get('/pipelined/locked', { config: { db: { pipeline: true } } }, async (request) => {
    await request.db`select pg_advisory_lock_shared(${LOCK}), pg_advisory_unlock_shared(${LOCK})`
    return { ok: true }
  })
  instance.get('/pipelined', { config: { db: { pipeline: true } } }, async (request) => {
    await request.db`select 1`
    return { ok: true }
  })
  const base = await listen(instance)

  // Both connections open.
  await Promise.all([instance.inject('/exclusive'), instance.inject('/exclusive')])
  await waitUntil(() => instance.pgPool.stats().idle === 2, 'two idle connections')
  locker = await db.sql.reserve()
  await locker`select pg_advisory_lock(${LOCK})`

  // One connection leased by an ordinary request; five pipelined requests share the other,
  // the first blocked on the lock, four queued behind it.
  const holder = startRequest(`${base}/exclusive/hold`)
  await waitUntil(() => instance.pgPool.stats().leased === 1, 'the ordinary request holding a connection')
  const blocked = startRequest(`${base}/pipelined/locked`)
  await waitUntil(() => instance.pgPool.stats().sharedQueries === 1, 'the blocked pipelined statement')
  const queued = Array.from({ length: 4 }, () => startRequest(`${base}/pipelined`))
  await waitUntil(() => instance.pgPool.stats().sharedQueries === 5, 'four pipelined statements queued behind it')
  // The ordinary request gives its connection back after a while (a hold time the pool learns).
  await sleep(300)
  release()
  expect(await holder.done).toBe(200)
  await waitUntil(() => instance.pgPool.stats().idle === 1, 'the connection back, idle')
  expect(instance.pgPool.stats()).toMatchObject({ idle: 1, waiting: 0, shared: 1, sharedQueries: 5 })

  const exclusive = await instance.inject('/exclusive')
  expect(exclusive.statusCode, exclusive.body).toBe(200)
  const pipelined = await instance.inject('/pipelined')
  expect(pipelined.statusCode, pipelined.body).toBe(200)
  expect(shed).toEqual([])

  await locker`select pg_advisory_unlock(${LOCK})`
  expect(await blocked.done).toBe(200)
  expect(await Promise.all(queued.map((request) => request.done))).toEqual([200, 200, 200, 200])
}, 30_000)

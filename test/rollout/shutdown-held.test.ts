import type { TransactionOutcome } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'
import { type Answer, codeOf, DELAY_SECONDS, send } from './support.js'

// Held attacks from hostile probing (rollout): app.close() while requests are in flight and
// queued, on the umbrella with its defaults (health, metrics, admission control).
// docs/faults.md "Shutdown": requests in flight and queued finish with 200; a hung query is
// cancelled and its connection cut once closeTimeout has passed since preClose; nothing is left
// on the server. Core README: a cut route transaction rolls back and answers 503
// FST_PG_POOL_CLOSED with Retry-After; app.close() takes at most closeTimeout + 1 s for cancels.

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table moves (batch text not null, step int not null)`
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

interface Built {
  app: FastifyInstance
  base: string
  applicationName: string
  outcomes: TransactionOutcome[]
}

async function build(pool: Record<string, unknown>): Promise<Built> {
  const server = Fastify()
  app = server
  const applicationName = uniqueName()
  await server.register(pgPool, { connection: db.url, pool: { max: 2, applicationName, ...pool } })
  const outcomes: TransactionOutcome[] = []
  server.pgPool.on('transaction', (outcome) => outcomes.push(outcome))
  // Two statements of one transaction with a wait between them: committed together or not at all.
  server.post<{ Params: { batch: string; s: string } }>(
    '/move/:batch/:s',
    { config: { db: { transaction: true } } },
    async (request) => {
      const { batch, s } = request.params
      await request.db`insert into moves values (${batch}, 1)`
      await request.db`select pg_sleep(${Number(s)})`
      await request.db`insert into moves values (${batch}, 2)`
      return { moved: batch }
    },
  )
  server.get('/one', async (request) => (await request.db`select 1 as one`)[0])
  server.get('/hang', async (request) => request.db`select pg_sleep(30)`)
  const base = await listen(server)
  return { app: server, base, applicationName, outcomes }
}

const rowsOf = async (batch: string) =>
  (await db.sql<{ step: number }[]>`select step from moves where batch = ${batch} order by step`).map((r) => r.step)

describe('app.close() with requests in flight and queued', () => {
  test('in flight and queued, transactions included: all 200, every transaction whole, nothing left on the server', async () => {
    const { app: server, base, applicationName, outcomes } = await build({ acquireTimeout: 10_000 })
    const batches = [uniqueName('a'), uniqueName('b')]
    const inFlight = batches.map((batch) => send(`${base}/move/${batch}/0.4`, { method: 'POST' }))
    await waitUntil(() => server.pgPool.stats().leased === 2, 'both transactions to hold a connection')
    const queued = [send(`${base}/one`), send(`${base}/one`, { method: 'HEAD' }), send(`${base}/one`)]
    await waitUntil(() => server.pgPool.stats().waiting === 3, 'three waiters')
    await server.close()
    app = undefined
    const answers = await Promise.all([...inFlight, ...queued])
    expect(answers.map((a) => (typeof a === 'string' ? a : a.status))).toEqual([200, 200, 200, 200, 200])
    for (const batch of batches) expect(await rowsOf(batch)).toEqual([1, 2])
    expect(outcomes).toEqual(['commit', 'commit'])
    expect(server.pgPool.stats()).toMatchObject({ open: 0, leased: 0, waiting: 0, accepting: false })
    expect(await waitFor(async () => (await db.countConnections(applicationName)) === 0, 3_000)).toBe(true)
  })

  test('past closeTimeout: holders and waiters get a coded 503 with delay-seconds, the cut transaction rolls back whole', async () => {
    const closeTimeout = 300
    const {
      app: server,
      base,
      applicationName,
      outcomes,
    } = await build({
      closeTimeout,
      statementTimeout: 0,
      acquireTimeout: 20_000,
    })
    const batch = uniqueName('cut')
    const holders = [send(`${base}/move/${batch}/30`, { method: 'POST' }), send(`${base}/hang`)]
    await waitUntil(
      async () => (await db.running(applicationName, '%pg_sleep%')) === 2,
      'both holders to run their sleep',
      5_000,
    )
    const waiters = [send(`${base}/one`), send(`${base}/one`, { method: 'HEAD' }), send(`${base}/one`)]
    await waitUntil(() => server.pgPool.stats().waiting === 3, 'three waiters')
    const started = performance.now()
    await server.close()
    const closeMs = performance.now() - started
    app = undefined
    const answers = (await Promise.all([...holders, ...waiters])) as (Answer | string)[]
    for (const answer of answers) {
      if (typeof answer === 'string') throw new Error(`a request ended without an answer: ${answer}`)
      expect(answer.status).toBe(503)
      expect(String(answer.headers['retry-after'])).toMatch(DELAY_SECONDS)
    }
    // HEAD has no body; the others name the code.
    expect(answers.map((a) => codeOf(a as Answer))).toEqual([
      'FST_PG_POOL_CLOSED',
      'FST_PG_POOL_CLOSED',
      'FST_PG_POOL_CLOSED',
      undefined,
      'FST_PG_POOL_CLOSED',
    ])
    expect(await rowsOf(batch)).toEqual([])
    expect(outcomes).toEqual(['rollback'])
    // closeTimeout, then up to 1 s for the cancels (docs/faults.md); a generous margin for a
    // loaded machine: only a hang fails this.
    expect(closeMs).toBeLessThan(closeTimeout + 1_000 + 5_000)
    expect(await waitFor(async () => (await db.countConnections(applicationName)) === 0, 3_000)).toBe(true)
  })
})

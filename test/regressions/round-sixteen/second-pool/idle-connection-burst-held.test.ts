// Round sixteen (second-pool), held: this round's admission rule "a request that finds a
// connection idle and nobody waiting is admitted" (packages/backpressure/src/admission.ts, 3f10714)
// was tried with a burst: a pool of 2 with one connection held by a request and the other idle,
// then 12 requests at once over HTTP (separate sockets), with `maxWaiting: 0` (no queue) and with
// `maxWaiting: 2`. The rule lets only the first through on the idle connection: every later one
// finds it taken (or a waiter ahead) and is judged by the other rules. Every 503 is a refusal at
// the door (coded, with Retry-After, published as shed); none is the core's own refusal after the
// request was admitted (acquireError 'rejected'), and no 500.
import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolCore, { channels, type RefusalMessage } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../../../support/database.js'
import { listen, startRequest } from '../../../support/http.js'

let db: TestDatabase
let app: FastifyInstance | undefined
let release: () => void = () => {}
let onRefusal: ((message: unknown) => void) | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  release()
  if (onRefusal !== undefined) channels.refusal.unsubscribe(onRefusal)
  onRefusal = undefined
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

test.each([0, 2])(
  'maxWaiting %i: a burst meeting one idle connection is refused at the door past it',
  async (maxWaiting) => {
    const instance = Fastify()
    app = instance
    await instance.register(pgPoolCore, {
      connection: db.url,
      pool: { max: 2, maxWaiting, applicationName: uniqueName() },
    })
    await instance.register(pgPoolBackpressure, { retryStorm: false, process: false })
    const shed: string[] = []
    const refusal = (message: unknown) => {
      if ((message as RefusalMessage).pool === instance.pgPool) shed.push((message as RefusalMessage).reason)
    }
    onRefusal = refusal
    channels.refusal.subscribe(refusal)
    const coreRefusals: string[] = []
    instance.pgPool.on('acquireError', (reason) => {
      coreRefusals.push(reason)
    })
    const held = new Promise<void>((resolve) => {
      release = resolve
    })
    instance.get('/hold', async (request) => {
      await request.db`select 1`
      await held
      return { ok: true }
    })
    instance.get('/work', async (request) => {
      await request.db`select pg_sleep(0.2)`
      return { ok: true }
    })
    const base = await listen(instance)
    // Both connections open, and hold times known.
    for (let i = 0; i < 3; i++) await Promise.all([fetch(`${base}/work`), fetch(`${base}/work`)])
    const holding = startRequest(`${base}/hold`)
    await waitUntil(() => {
      const stats = instance.pgPool.stats()
      return stats.leased === 1 && stats.idle === 1
    }, 'one connection held, the other idle')

    const answers = await Promise.all(
      Array.from({ length: 12 }, async () => {
        const response = await fetch(`${base}/work`)
        const body = (await response.json()) as { code?: string }
        return { status: response.status, retryAfter: response.headers.get('retry-after'), code: body.code }
      }),
    )
    release()
    expect(await holding.done).toBe(200)

    const served = answers.filter((answer) => answer.status === 200)
    const refused = answers.filter((answer) => answer.status !== 200)
    expect(served.length).toBeGreaterThanOrEqual(1)
    // At most the idle connection and the waiters the cap allows.
    expect(served.length).toBeLessThanOrEqual(1 + maxWaiting)
    for (const answer of refused) {
      expect(answer.status).toBe(503)
      expect(answer.retryAfter).toMatch(/^\d+$/)
      expect(['FST_PG_POOL_QUEUE_FULL', 'FST_PG_POOL_OVERLOADED']).toContain(answer.code)
    }
    expect(shed).toHaveLength(refused.length)
    expect(coreRefusals).toEqual([])
  },
)

import { channels } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { Admission } from '../../packages/backpressure/dist/admission.js'
import { resolveOptions } from '../../packages/backpressure/dist/options.js'
import { poolOptions, StaticView } from '../../packages/backpressure/test/simulated-pool.js'
import { FakeClock } from '../../packages/core/test/fake-clock.js'
import { createTestDatabase, sleep, type TestDatabase, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { listen } from '../support/http.js'
import { type Answer, codeOf, DELAY_SECONDS, send } from './support.js'

// Held attacks from hostile probing (rollout): SIGTERM (app.close()) in the middle of a retry
// storm, and Retry-After / storm state across a jump of the admission clock.
// packages/backpressure/README.md "Retry storms": refusals are held back retryStorm.delay while
// clients retry much faster than the pool drains; "Refusals held back are answered at once when
// the app closes". Core/faults docs: nothing is left on the server after close. The admission
// clock is the process's monotonic clock (performance.now; no fake clock is exposed to apps): a
// wall-clock step cannot move it, a suspended VM can only move it forward.

let db: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db.drop())

describe('app.close() during a retry storm', () => {
  test('refusals held back are answered at close with a coded 503 and delay-seconds; no 500 anywhere; nothing left', async () => {
    const server = Fastify()
    app = server
    const applicationName = uniqueName()
    await server.register(pgPool, {
      connection: db.url,
      pool: { max: 2, applicationName, acquireTimeout: 3_000 },
      // Held far longer than the test may last: only the close can answer them.
      backpressure: { retryStorm: { factor: 0.5, delay: 120_000 } },
    })
    server.get('/slow', async (request) => (await request.db`select pg_sleep(0.05), 1 as one`)[0])
    server.get('/low', { config: { backpressure: { priority: 'low' } } }, async (request) => {
      await request.db`select pg_sleep(0.05)`
      return { ok: true }
    })
    const base = await listen(server)
    const answers: (Answer | string)[] = []
    let pending = 0
    let stop = false
    // Closed-loop clients that retry at once, ignoring Retry-After.
    const clients = Array.from({ length: 40 }, async (_, i) => {
      while (!stop) {
        pending++
        const answer = await send(`${base}/${i % 4 === 0 ? 'low' : 'slow'}`)
        pending--
        answers.push(answer)
      }
    })
    let refusals = 0
    const onRefusal = () => {
      refusals++
    }
    channels.refusal.subscribe(onRefusal)
    try {
      // Refusals published and not answered: held back.
      const refusedAnswers = () => answers.filter((a) => typeof a !== 'string' && a.status === 503).length
      await waitUntil(() => refusals - refusedAnswers() > 5, 'refusals held back', 20_000)
    } finally {
      channels.refusal.unsubscribe(onRefusal)
    }
    // The clients stop retrying; what is still pending once the pool is idle is held back.
    stop = true
    await waitUntil(() => server.pgPool.stats().leased === 0 && server.pgPool.stats().waiting === 0, 'idle', 10_000)
    await sleep(100)
    const held = pending
    const answered = answers.length
    await server.close()
    app = undefined
    await Promise.all(clients)
    const atClose = answers.slice(answered)
    const kinds: Record<string, number> = {}
    for (const a of atClose) {
      const kind = typeof a === 'string' ? a : `${a.status} ${codeOf(a)}`
      kinds[kind] = (kinds[kind] ?? 0) + 1
    }
    console.log(`[probe-rollout] close during a storm: ${held} held, answered at close: ${JSON.stringify(kinds)}`)
    expect(held).toBeGreaterThan(0)
    expect(atClose.length).toBe(held)
    for (const answer of atClose) {
      if (typeof answer === 'string') throw new Error(`a held refusal was not answered: ${answer}`)
      expect(answer.status).toBe(503)
      expect(codeOf(answer)).toMatch(/^FST_PG_POOL_(QUEUE_FULL|OVERLOADED)$/)
      expect(String(answer.headers['retry-after'])).toMatch(DELAY_SECONDS)
    }
    for (const answer of answers) {
      if (typeof answer === 'string') throw new Error(`a request failed: ${answer}`)
      expect([200, 503]).toContain(answer.status)
    }
    expect(server.pgPool.stats()).toMatchObject({ open: 0, leased: 0, waiting: 0 })
    expect(await waitFor(async () => (await db.countConnections(applicationName)) === 0, 3_000)).toBe(true)
  })
})

describe('the admission clock jumps forward (a suspended VM)', () => {
  test('Retry-After stays whole seconds within bounds, a storm and an overload do not outlive the jump', () => {
    const clock = new FakeClock(0)
    const pool = poolOptions({ max: 2, maxWaiting: 4 })
    const view = new StaticView(pool, { waitingCap: 4, waiting: 4 })
    const admission = new Admission(
      view as never,
      resolveOptions({ process: false, retryStorm: { factor: 2, delay: 500 }, minRetryAfter: 1, maxRetryAfter: 30 }),
      clock,
      () => 0.5,
    )
    for (let i = 0; i < 20; i++) admission.onRelease(40)
    for (let i = 0; i < 50; i++) expect(admission.check('normal')).toBe('queue_full')
    clock.advance(50)
    expect(admission.refusalDelay()).toBeGreaterThan(0)
    const before = admission.retryAfter()
    expect(Number.isInteger(before)).toBe(true)
    // An hour passes with no event at all.
    clock.advance(3_600_000)
    const after = admission.retryAfter()
    expect(Number.isInteger(after) && after >= 1 && after <= 30).toBe(true)
    expect(admission.refusalDelay()).toBe(0)
    // The queue drained meanwhile: the first request is admitted, whatever the state before.
    view.set({ waiting: 0 })
    expect(admission.check('low')).toBeUndefined()
    expect(admission.check('normal')).toBeUndefined()
  })
})

import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'
import { healthApp, probe } from './support.js'

// Paths outside backpressure's default exempt prefixes, and no exempt prefixes at all: only the
// routes' own config keeps the probes from being refused.
const paths = { livePath: '/alive', readyPath: '/ready', healthPath: false } as const

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})

describe('probes are never refused by load shedding', () => {
  test('pool admission control refuses database routes while the probes answer', async () => {
    const { app } = await healthApp(
      db.url,
      { max: 1, maxWaiting: 2, acquireTimeout: 10_000 },
      { ...paths, failWaiting: 0 },
    )
    await app.register(pgPoolBackpressure, { exempt: [], process: false })
    app.get('/slow', async (request) => {
      await request.db`select pg_sleep(0.5)`
      return { ok: true }
    })
    try {
      const base = await listen(app)
      const slow = Array.from({ length: 3 }, () => startRequest(`${base}/slow`))
      expect(await waitFor(() => app.pgPool.stats().waiting === 2)).toBe(true)

      const refused = await fetch(`${base}/slow`)
      expect(refused.status).toBe(503)
      expect(await refused.json()).toMatchObject({ code: 'FST_PG_POOL_QUEUE_FULL' })

      const live = await probe(base, '/alive')
      expect(live.status).toBe(200)
      expect(live.body.status).toBe('pass')
      const ready = await probe(base, '/ready')
      expect(ready.status).toBe(200)
      expect(ready.body.status).toBe('warn')
      expect(ready.body.checks?.['postgres:connections']?.[0]).toMatchObject({ status: 'warn', waiting: 2 })
      expect(await Promise.all(slow.map((s) => s.done))).toEqual([200, 200, 200])
    } finally {
      await app.close()
    }
  })

  test('@fastify/under-pressure refuses other routes under event-loop pressure while the probes answer', async () => {
    const { app } = await healthApp(db.url, {}, paths)
    await app.register(pgPoolBackpressure, {
      exempt: [],
      process: { maxEventLoopDelay: 20, sampleInterval: 50 },
    })
    app.get('/work', async () => ({ ok: true }))
    try {
      await app.ready()
      await app.inject('/ready') // a fresh ping result for the window below
      const isUnderPressure = (app as unknown as { isUnderPressure(): boolean }).isUnderPressure.bind(app)
      // Keep the event loop blocked 60 ms out of every ~60 ms: every sample is over the threshold.
      const blocker = setInterval(() => {
        const end = Date.now() + 60
        while (Date.now() < end) {}
      }, 1)
      let results: Awaited<ReturnType<typeof app.inject>>[]
      try {
        expect(await waitFor(isUnderPressure, 3_000, 5)).toBe(true)
        results = await Promise.all([app.inject('/work'), app.inject('/alive'), app.inject('/ready')])
        expect(isUnderPressure()).toBe(true)
      } finally {
        clearInterval(blocker)
      }
      const [work, live, ready] = results as [(typeof results)[0], (typeof results)[0], (typeof results)[0]]
      expect(work.statusCode).toBe(503)
      expect(live.statusCode).toBe(200)
      expect(JSON.parse(live.body).status).toBe('pass')
      expect(ready.statusCode).toBe(200)
      expect(JSON.parse(ready.body).status).toBe('pass')
    } finally {
      await app.close()
    }
  })
})

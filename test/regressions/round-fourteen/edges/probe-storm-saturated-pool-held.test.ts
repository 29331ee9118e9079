import Fastify, { type FastifyInstance } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, uniqueName, waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'

/**
 * 500 concurrent readiness probes over real sockets while the pool is saturated by slow
 * requests (every connection leased, the queue at its cap): the probes are never refused by
 * admission control, never take a pool connection nor a queue slot, share one ping on a
 * connection of their own, and answer within pingTimeout; liveness never reaches the server.
 */

let db: TestDatabase
let app: FastifyInstance | undefined
let proxy: TcpProxy | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  await proxy?.close()
  app = undefined
  proxy = undefined
})
afterAll(() => db.drop())

function shed(metrics: string): number {
  let sum = 0
  for (const line of metrics.split('\n')) {
    const m = /^pg_pool_requests_shed_total\{[^}]*\} (\d+)/.exec(line)
    if (m) sum += Number(m[1])
  }
  return sum
}

test('500 probes against a saturated pool: one ping, no pool connection, no queue slot, no refusal', async () => {
  proxy = await startTcpProxy(Number(new URL(db.url).port || 5432))
  const applicationName = uniqueName()
  const instance = Fastify()
  app = instance
  const max = 2
  const maxWaiting = 4
  await instance.register(pgPool, {
    connection: proxy.urlFor(db.url),
    pool: { max, maxWaiting, applicationName, acquireTimeout: 30_000 },
    health: { cacheTime: 60_000, pingTimeout: 5_000, pingWarn: 0 },
    backpressure: { retryStorm: false },
  })
  let release = false
  instance.get('/warm', async (request) => request.db`select 1`)
  // High priority: refused only at the queue's cap, so the six fill the pool and the queue.
  instance.get('/slow', { config: { backpressure: { priority: 'high' } } }, async (request) => {
    // Holds its connection until the test lets go.
    while (!release) await request.db`select pg_sleep(0.05)`
    return { ok: true }
  })
  const base = await listen(instance)
  // Warm the pool (its connections open) before counting pings.
  await Promise.all(Array.from({ length: max }, () => fetch(`${base}/warm`)))
  const slow: Promise<number>[] = []
  for (let i = 0; i < max + maxWaiting; i++) {
    slow.push(fetch(`${base}/slow`).then((r) => r.status))
    const { leased, waiting } = instance.pgPool.stats()
    expect(
      await waitFor(() => instance.pgPool.stats().leased + instance.pgPool.stats().waiting > leased + waiting, 10_000),
    ).toBe(true)
  }
  expect(instance.pgPool.stats()).toMatchObject({ leased: max, waiting: maxWaiting })
  await waitFor(() => instance.pgPool.stats().connecting === 0)
  const acceptedBefore = proxy.accepted
  const shedBefore = shed(await (await fetch(`${base}/metrics`)).text())

  const sessions: number[] = []
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      sessions.push(await db.countConnections(applicationName))
      await sleep(20)
    }
  })()
  const statsSeen: { leased: number; waiting: number }[] = []
  const statsTimer = setInterval(() => {
    const { leased, waiting } = instance.pgPool.stats()
    statsSeen.push({ leased, waiting })
  }, 5)

  const probes = await Promise.all(
    Array.from({ length: 500 }, async (_, i) => {
      const path = i % 5 === 0 ? '/health/live' : i % 2 === 0 ? '/health/ready' : '/health'
      const res = await fetch(base + path, { headers: { connection: 'close' } })
      return {
        path,
        status: res.status,
        type: res.headers.get('content-type'),
        cache: res.headers.get('cache-control'),
        retryAfter: res.headers.get('retry-after'),
        body: (await res.json()) as { status: string; output?: string; checks?: Record<string, { status: string }[]> },
      }
    }),
  )
  clearInterval(statsTimer)
  sampling = false
  await sampler

  for (const p of probes) {
    expect(p.type).toBe('application/health+json; charset=utf-8')
    expect(p.cache).toBe('no-store')
    expect(JSON.stringify(p.body)).not.toContain('FST_PG_POOL_QUEUE_FULL')
    expect(JSON.stringify(p.body)).not.toContain('FST_PG_POOL_OVERLOADED')
    if (p.path === '/health/live') {
      expect(p.status).toBe(200)
      expect(p.body.status).toBe('pass')
    } else {
      // The queue is at its cap: readiness fails on saturation, yet its ping passed.
      expect(p.status).toBe(503)
      expect(p.body.status).toBe('fail')
      expect(p.body.output).toMatch(/pool exhausted/)
      expect(p.body.checks?.['postgres:responseTime']?.[0]?.status).toBe('pass')
    }
  }
  // One ping for the whole storm (cacheTime 60 s), on a connection of its own.
  expect(proxy.accepted - acceptedBefore).toBe(1)
  // Never more server sessions than the pool's max plus the ping's.
  expect(Math.max(...sessions)).toBeLessThanOrEqual(max + 1)
  // The probes took no connection and no queue slot.
  for (const s of statsSeen) {
    expect(s.leased).toBe(max)
    expect(s.waiting).toBe(maxWaiting)
  }
  // Nothing was shed for them.
  expect(shed(await (await fetch(`${base}/metrics`)).text())).toBe(shedBefore)

  release = true
  expect(await Promise.all(slow)).toEqual(Array.from({ length: max + maxWaiting }, () => 200))
}, 120_000)

test('cacheTime 0 under a closed-loop probe storm: one ping at a time, never two ping sessions on the server', async () => {
  const applicationName = uniqueName()
  const instance = Fastify()
  app = instance
  const max = 2
  await instance.register(pgPool, {
    connection: db.url,
    pool: { max, applicationName },
    health: { cacheTime: 0 },
  })
  instance.get('/warm', async (request) => request.db`select 1`)
  const base = await listen(instance)
  await Promise.all(Array.from({ length: max }, () => fetch(`${base}/warm`)))
  const sessions: number[] = []
  let sampling = true
  // The pool's sessions and the pings' (`<applicationName>/ping`).
  const sampler = (async () => {
    while (sampling) {
      const [row] = await db.admin<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity where application_name like ${`${applicationName}%`}`
      sessions.push(row?.n ?? 0)
    }
  })()
  const until = Date.now() + 2_000
  let answered = 0
  await Promise.all(
    Array.from({ length: 50 }, async () => {
      while (Date.now() < until) {
        const res = await fetch(`${base}/health/ready`)
        expect(res.status).toBe(200)
        await res.text()
        answered++
      }
    }),
  )
  sampling = false
  await sampler
  expect(answered).toBeGreaterThan(50)
  expect(Math.max(...sessions)).toBeLessThanOrEqual(max + 1)
}, 60_000)

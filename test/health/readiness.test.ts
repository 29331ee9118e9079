import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'
import { startTcpProxy } from '../support/tcp-proxy.js'
import { expectHealthJson, healthApp, healthAppCountingPings, probe } from './support.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})

/** Sessions the server has seen on this file's database (pg_stat_database). */
async function serverSessions(): Promise<number> {
  const name = new URL(db.directUrl).pathname.slice(1)
  const [row] = await db.admin<{ n: number }[]>`
    select sessions::int as n from pg_stat_database where datname = ${name}`
  return row?.n ?? 0
}

describe('database up', () => {
  test('ready and /health answer 200 pass in application/health+json; live never pings', async () => {
    const { app, pings } = await healthAppCountingPings(db.url)
    try {
      const base = await listen(app)
      const live = await probe(base, '/health/live')
      expect(live.status).toBe(200)
      expect(live.body.status).toBe('pass')
      expect(pings()).toBe(0)

      for (const path of ['/health/ready', '/health']) {
        const ready = await probe(base, path)
        expect(ready.status, path).toBe(200)
        expect(ready.contentType).toBe('application/health+json; charset=utf-8')
        expect(ready.cacheControl).toBe('no-store')
        expect(ready.body.status).toBe('pass')
        expect(ready.body.output).toBeUndefined()
        const [responseTime] = ready.body.checks?.['postgres:responseTime'] ?? []
        expect(responseTime).toMatchObject({ status: 'pass', observedUnit: 'ms', componentType: 'datastore' })
        expect(responseTime?.observedValue).toBeGreaterThan(0)
        expect(responseTime?.observedValue).toBeLessThan(1_000)
        const [connections] = ready.body.checks?.['postgres:connections'] ?? []
        expect(connections).toMatchObject({ status: 'pass', observedUnit: 'connections', max: 10, waiting: 0 })
      }
      // Both paths within one cache window: one ping.
      expect(pings()).toBe(1)

      const head = await fetch(`${base}/health/ready`, { method: 'HEAD' })
      expect(head.status).toBe(200)
      expect(await head.text()).toBe('')
      // Health routes never take a connection from the pool.
      expect(app.pgPool.stats().leased).toBe(0)
    } finally {
      await app.close()
    }
  })

  test('the connection budget is reported under postgres:budget when the server told it', async (ctx) => {
    const { app } = await healthApp(db.url, { max: 4, instances: 3 })
    try {
      const budget = app.pgPool.budget()
      if (budget === undefined) {
        // Behind PgBouncer the server's figures are not the pool's: no budget, no check.
        expect(db.viaBouncer).toBe(true)
        const res = await app.inject('/health')
        expect(JSON.parse(res.body).checks['postgres:budget']).toBeUndefined()
        ctx.annotate('budget unknown behind PgBouncer')
        return
      }
      const res = await app.inject('/health')
      const body = expectHealthJson(JSON.parse(res.body))
      expect(body.checks?.['postgres:budget']?.[0]).toMatchObject({
        status: 'pass',
        observedValue: 12,
        observedUnit: 'connections',
        instances: 3,
        maxConnections: budget.maxConnections,
        available: budget.available,
      })
    } finally {
      await app.close()
    }
  })

  test("details: 'public' shows the status alone; paths are configurable and can be disabled", async () => {
    const { app } = await healthApp(db.url, {}, { details: 'public', livePath: '/alive', healthPath: false })
    try {
      const base = await listen(app)
      const ready = await probe(base, '/health/ready')
      expect(ready.status).toBe(200)
      expect(ready.body).toEqual({ status: 'pass' })
      expect((await probe(base, '/alive')).body).toEqual({ status: 'pass' })
      expect((await fetch(`${base}/health`)).status).toBe(404)
      expect((await fetch(`${base}/health/live`)).status).toBe(404)
    } finally {
      await app.close()
    }
  })

  test('invalid options fail at register with a coded error naming the option', async () => {
    for (const [options, name] of [
      [{ pingTimeout: 0 }, 'health.pingTimeout'],
      [{ cacheTime: '1s' }, 'health.cacheTime'],
      [{ readyPath: 'health' }, 'health.readyPath'],
      [{ details: 'secret' }, 'health.details'],
      [{ requireDatabase: 'never' }, 'health.requireDatabase'],
      [{ livePath: '/health' }, 'health.livePath'],
      [{ pingTimeot: 5 }, 'health.pingTimeot'],
    ] as const) {
      const error = await healthApp(db.url, { lazy: true }, options as never).then(
        async ({ app }) => {
          await app.close()
          return undefined
        },
        (e: unknown) => e as { code: string; message: string },
      )
      expect(error?.code, name).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(error?.message).toContain(name)
    }
  })
})

describe('probe storm', () => {
  test('200 probes at once share one ping; the next window pings once more', async () => {
    const cacheTime = 2_000
    const { app, pings } = await healthAppCountingPings(db.url, { max: 2 }, { cacheTime })
    try {
      const base = await listen(app)
      const before = await serverSessions()
      const storm = async () => {
        const started = performance.now()
        const probes = await Promise.all(Array.from({ length: 200 }, () => probe(base, '/health/ready')))
        return { probes, ms: performance.now() - started }
      }
      // A ping's result serves for cacheTime after it finished: a storm longer than that may
      // see one more ping per window, never one per probe.
      const bound = (ms: number) => 1 + Math.floor(ms / cacheTime)
      const first = await storm()
      expect(first.probes.every((p) => p.status === 200 && p.body.status === 'pass')).toBe(true)
      expect(pings()).toBeGreaterThanOrEqual(1)
      expect(pings()).toBeLessThanOrEqual(bound(first.ms))
      // Probes carry the time of the ping they were answered from: as many as there were pings.
      const times = new Set(first.probes.map((p) => p.body.checks?.['postgres:responseTime']?.[0]?.time))
      expect(times.size).toBe(pings())
      if (!db.viaBouncer) {
        // The server saw one new session per ping (the pool's connections were open before).
        const seen = pings()
        expect(await waitFor(async () => (await serverSessions()) - before >= seen, 3_000)).toBe(true)
        await sleep(200)
        expect((await serverSessions()) - before).toBe(seen)
      }
      const afterFirst = pings()
      await sleep(cacheTime + 50)
      const second = await storm()
      expect(second.probes.every((p) => p.status === 200)).toBe(true)
      expect(pings() - afterFirst).toBeGreaterThanOrEqual(1)
      expect(pings() - afterFirst).toBeLessThanOrEqual(bound(second.ms))
    } finally {
      await app.close()
    }
  })

  test('steady probing pings at most once per cache window', async () => {
    const { app, pings } = await healthAppCountingPings(db.url, {}, { cacheTime: 300 })
    try {
      const started = Date.now()
      while (Date.now() - started < 1_500) {
        await Promise.all(Array.from({ length: 10 }, () => app.inject('/health/ready')))
        await sleep(10)
      }
      const windows = Math.ceil((Date.now() - started) / 300)
      expect(pings()).toBeGreaterThanOrEqual(2)
      expect(pings()).toBeLessThanOrEqual(windows)
    } finally {
      await app.close()
    }
  })
})

describe('saturated pool', () => {
  test('live answers in < 50 ms; ready reports the exhaustion as warn, then fail at failWaiting', async () => {
    const { app } = await healthApp(
      db.url,
      { max: 2, maxWaiting: 20, acquireTimeout: 10_000 },
      { failWaiting: 6, cacheTime: 0 },
    )
    app.get('/slow', async (request) => {
      await request.db`select pg_sleep(0.6)`
      return { ok: true }
    })
    try {
      const base = await listen(app)
      const slow = Array.from({ length: 7 }, () => startRequest(`${base}/slow`))
      expect(await waitFor(() => app.pgPool.stats().leased === 2 && app.pgPool.stats().waiting === 5)).toBe(true)

      const lives = []
      for (let i = 0; i < 10; i++) lives.push(await probe(base, '/health/live'))
      expect(lives.every((p) => p.status === 200 && p.body.status === 'pass')).toBe(true)
      expect(Math.max(...lives.map((p) => p.ms))).toBeLessThan(50)

      const warn = await probe(base, '/health/ready')
      expect(warn.status).toBe(200)
      expect(warn.body.status).toBe('warn')
      expect(warn.body.output).toContain('pool exhausted')
      expect(warn.body.checks?.['postgres:connections']?.[0]).toMatchObject({
        status: 'warn',
        observedValue: 2,
        max: 2,
        waiting: 5,
      })
      // The ping does not queue behind the leases: it answered well within the saturation.
      expect(warn.body.checks?.['postgres:responseTime']?.[0]?.status).toBe('pass')
      expect(warn.ms).toBeLessThan(500)

      slow.push(startRequest(`${base}/slow`), startRequest(`${base}/slow`))
      expect(await waitFor(() => app.pgPool.stats().waiting >= 6)).toBe(true)
      const fail = await probe(base, '/health/ready')
      expect(fail.status).toBe(503)
      expect(fail.body.status).toBe('fail')
      expect(fail.body.checks?.['postgres:connections']?.[0]?.status).toBe('fail')
      expect((await probe(base, '/health/live')).status).toBe(200)

      expect(await Promise.all(slow.map((s) => s.done))).toEqual(Array(9).fill(200))
      const after = await probe(base, '/health/ready')
      expect(after.status).toBe(200)
      expect(after.body.status).toBe('pass')
    } finally {
      await app.close()
    }
  })
})

describe('maxWaiting 0', () => {
  test('a request waiting for a connection being opened does not fail readiness, nor does a pool with every connection leased and nobody waiting', async () => {
    const proxy = await startTcpProxy(Number(new URL(db.url).port), new URL(db.url).hostname)
    // The second connection (the pool's first beyond register's) takes 800 ms to open.
    proxy.connectDelay = (index) => (index === 1 ? 800 : 0)
    const { app } = await healthApp(proxy.urlFor(db.url), { max: 3, maxWaiting: 0 }, { cacheTime: 0 })
    app.get('/slow', async (request) => {
      await request.db`select pg_sleep(1)`
      return { ok: true }
    })
    try {
      const base = await listen(app)
      const slow = [startRequest(`${base}/slow`)]
      expect(await waitFor(() => app.pgPool.stats().leased === 1)).toBe(true)
      slow.push(startRequest(`${base}/slow`))
      expect(await waitFor(() => app.pgPool.stats().waiting === 1)).toBe(true)
      expect(app.pgPool.stats()).toMatchObject({ connecting: 1 })
      // Before the fix the default fail threshold was max(1, maxWaiting): one waiter failed it.
      const opening = await probe(base, '/health/ready')
      expect(opening.status).toBe(200)
      expect(opening.body.status).toBe('pass')
      expect(await waitFor(() => app.pgPool.stats().leased === 2)).toBe(true)
      slow.push(startRequest(`${base}/slow`))
      expect(await waitFor(() => app.pgPool.stats().leased === 3)).toBe(true)
      const full = await probe(base, '/health/ready')
      expect(full.status).toBe(200)
      expect(full.body.status).toBe('pass')
      expect(await Promise.all(slow.map((s) => s.done))).toEqual([200, 200, 200])
    } finally {
      await app.close()
      await proxy.close()
    }
  })
})

describe('draining', () => {
  test('app.close() with a slow request in flight: ready 503 at once, live 200, the request completes, close finishes', async () => {
    const { app } = await healthApp(db.url, {}, { drainDelay: 800 }, { return503OnClosing: false })
    const events: string[] = []
    app.get('/slow', async (request) => {
      await request.db`select pg_sleep(1.5)`
      return { ok: true }
    })
    app.addHook('onResponse', async (request, reply) => {
      if (request.url === '/slow') events.push(`slow ${reply.statusCode}`)
    })
    const base = await listen(app)
    expect((await probe(base, '/health/ready')).status).toBe(200)
    const slow = startRequest(`${base}/slow`)
    expect(await waitFor(() => app.pgPool.stats().leased === 1)).toBe(true)

    const closeStarted = Date.now()
    const closed = app.close().then(() => events.push('closed'))

    const ready = await probe(base, '/health/ready')
    expect(Date.now() - closeStarted).toBeLessThan(700)
    expect(ready.status).toBe(503)
    expect(ready.body.status).toBe('fail')
    expect(ready.body.output).toBe('shutting down')
    expect(ready.body.checks?.['postgres:responseTime']).toBeUndefined()
    const health = await probe(base, '/health')
    expect(health.status).toBe(503)
    const live = await probe(base, '/health/live')
    expect(live.status).toBe(200)
    expect(live.body.status).toBe('pass')

    expect(await slow.done).toBe(200)
    await closed
    // The slow request outlasts drainDelay: close waited for it.
    expect(events).toEqual(['slow 200', 'closed'])
    expect(Date.now() - closeStarted).toBeGreaterThanOrEqual(1_200)
  })

  test('without drainDelay a probe after close() never sees 200', async () => {
    const { app } = await healthApp(db.url)
    const base = await listen(app)
    expect((await probe(base, '/health/ready')).status).toBe(200)
    const closed = app.close()
    // Fastify refuses new connections (or answers its own 503) once close() began.
    const outcome = await fetch(`${base}/health/ready`).then(
      (res) => res.status,
      () => 'refused' as const,
    )
    expect([503, 'refused']).toContain(outcome)
    await closed
  })
})

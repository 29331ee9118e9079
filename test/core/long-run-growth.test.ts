import { channel } from 'node:diagnostics_channel'
import { channelNames } from '@fastify-pg-pool/core'
import type { FastifyInstance } from 'fastify'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { Lease } from '../../packages/core/dist/lease.js'
import { Pool } from '../../packages/core/dist/pool.js'
import { parseExposition } from '../metrics/exposition.js'
import { startTestSdk } from '../otel/sdk.js'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor, waitUntil } from '../support/database.js'
import { activeResources, collectGarbage, liveObjects, processListeners, Timeout } from '../support/growth-kit.js'
import { listen, startPost, startRequest } from '../support/http.js'

// Attacks on growth that held: a mixed workload run in batches leaves nothing behind that grows
// with the number of requests, and apps created and closed in a loop leave nothing global.
// (Round nine; what did not hold: test/regressions/{copy-hang-up,listen-sweep-timers,
// prepared-statements-cap}.test.ts.)

let db: TestDatabase
const apps: FastifyInstance[] = []
const warnings: string[] = []
const onWarning = (warning: Error) => {
  if (!warning.message.includes('queryObjects')) warnings.push(`${warning.name}: ${warning.message}`)
}
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table items (id int primary key, v int not null)`
  await db.sql`insert into items select g, g from generate_series(1, 200) g`
  process.on('warning', onWarning)
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(async () => {
  process.off('warning', onWarning)
  await db.drop()
})

interface Session {
  pid: number
  prepared: number
  cursors: number
  advisory: number
  channels: number
  temps: number
}

describe('a mixed workload in batches', () => {
  test('batches 2 and 3 leave the same counts: timers, leases, backends, server session state, metric series, log lines', async () => {
    const applicationName = uniqueName('growth')
    const { app, logs } = await coreApp(
      db.directUrl,
      { max: 3, applicationName, pgbouncer: false, acquireTimeout: 2_000 },
      {},
      {},
    )
    apps.push(app)
    // A channel kept listened: the LISTEN connection stays (no sweep per unlisten, see growth.test.ts).
    const kept = await app.db.listen('growth_kept', () => {})

    app.get('/ok/:id', async (request) => {
      const [row] = await request.db`select v from items where id = ${Number((request.params as { id: string }).id)}`
      return row ?? null
    })
    app.get('/fail', async (request) => request.db`select * from missing_table`)
    app.get('/unique', async (request) => request.db`insert into items values (1, 1)`)
    app.post('/tx-throw', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`update items set v = v + 1 where id = 2`
      throw new Error('handler failed')
    })
    app.post('/tx-ok', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`update items set v = v + 1 where id = 3`
      return { ok: true }
    })
    app.get('/pipe/:id', { config: { db: { pipeline: true } } }, async (request) => {
      const [row] = await request.db`select v from items where id = ${Number((request.params as { id: string }).id)}`
      return row ?? null
    })
    app.get('/begin', async (request) =>
      request.db.begin(async (tx) => {
        await tx`update items set v = v + 1 where id = 4`
        return { ok: true }
      }),
    )
    app.get('/begin-throw', async (request) =>
      request.db.begin(async (tx) => {
        await tx`update items set v = v + 1 where id = 5`
        throw new Error('block failed')
      }),
    )
    app.get('/cursor', async (request) => {
      let n = 0
      for await (const rows of request.db`select id from items`.cursor(25)) n += rows.length
      return { n }
    })
    app.get('/cursor-break', async (request) => {
      for await (const _rows of request.db`select id from items`.cursor(10)) break
      return { ok: true }
    })
    app.get('/unsafe/:n', async (request) =>
      // Distinct texts, not prepared (unsafe prepares only when asked): no statement is kept.
      request.db.unsafe(`select ${Number((request.params as { n: string }).n)}::int as n, $1::int as one`, [1]),
    )
    app.get('/state', async (request) => {
      await request.db`select set_config('app.tenant', ${'t1'}, false)`
      await request.db`select pg_advisory_lock(4242)`
      await request.db`create temp table if not exists scratch (x int)`
      await request.db.unsafe('listen growth_request_channel')
      await request.db.unsafe('declare held cursor with hold for select 1')
      return { ok: true }
    })
    app.get('/listen/:n', async () => {
      const listening = await app.db.listen(`growth_${(app.server.address() as { port: number }).port}`, () => {})
      await listening.unlisten()
      return { ok: true }
    })
    app.get('/slow', async (request) => request.db`select pg_sleep(1)`)
    app.post('/slow-tx', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`update items set v = v + 1 where id = 6`
      await request.db`select pg_sleep(1)`
      return { ok: true }
    })
    app.get('/session', async (request) => {
      const [row] = await request.db<Session[]>`
        select pg_backend_pid() as pid,
          (select count(*)::int from pg_prepared_statements) as prepared,
          (select count(*)::int from pg_cursors where name <> '') as cursors,
          (select count(*)::int from pg_locks where pid = pg_backend_pid() and locktype = 'advisory') as advisory,
          (select count(*)::int from pg_listening_channels()) as channels,
          (select count(*)::int from pg_class where relpersistence = 't') as temps`
      return row
    })
    const { pgPoolMetrics } = await registerMetrics(app)
    const base = await listen(app)

    let seq = 0
    const statuses = new Map<string, number>()
    const count = (key: string) => statuses.set(key, (statuses.get(key) ?? 0) + 1)
    const batch = async () => {
      for (let round = 0; round < 25; round++) {
        const k = seq++
        const injected = [
          app.inject(`/ok/${(k % 200) + 1}`),
          app.inject('/fail'),
          app.inject('/unique'),
          app.inject({ method: 'POST', url: '/tx-throw' }),
          app.inject({ method: 'POST', url: '/tx-ok' }),
          app.inject(`/pipe/${(k % 200) + 1}`),
          app.inject(`/pipe/${((k + 7) % 200) + 1}`),
          // A burst that shares connections (pipelineDepth 8 on 3 connections).
          ...Array.from({ length: 12 }, (_, i) => app.inject(`/pipe/${((k + i) % 200) + 1}`)),
          app.inject('/begin'),
          app.inject('/begin-throw'),
          app.inject('/cursor'),
          app.inject('/cursor-break'),
          app.inject(`/unsafe/${k}`),
          app.inject('/state'),
          app.inject(`/listen/${k}`),
          app.inject(`/nowhere/${k}?q=${k}`),
          app.inject({ method: 'PURGE', url: `/ok/${k}` }),
          app.inject({ method: 'PROPFIND', url: `/x${k}` }),
        ]
        for (const response of await Promise.all(injected)) count(`${response.statusCode}`)
        // Hang-ups over real sockets: during a statement, and during a route transaction.
        const get = startRequest(`${base}/slow`)
        const post = startPost(`${base}/slow-tx`, {})
        await waitFor(() => app.pgPool.stats().leased >= 2, 1_000, 5)
        get.abort()
        post.abort()
        count(String(await get.done))
        count(String(await post.done))
        await waitUntil(() => app.pgPool.stats().leased === 0, 'the aborted leases to come back')
      }
    }
    const sessions = async (): Promise<Session[]> => {
      // One request per open connection at once: each reads its own session (then reset).
      const open = app.pgPool.stats().open
      const rows = await Promise.all(Array.from({ length: open }, () => app.inject('/session')))
      return rows.map((row) => row.json<Session>()).sort((a, b) => a.pid - b.pid)
    }
    const snapshot = async () => {
      await waitUntil(() => app.pgPool.stats().leased === 0 && app.pgPool.stats().waiting === 0, 'an idle pool', 5_000)
      await collectGarbage()
      const scrape = parseExposition((await pgPoolMetrics.scrape()).body)
      const stats = app.pgPool.stats()
      return {
        timers: activeResources().Timeout ?? 0,
        liveTimers: liveObjects(Timeout),
        leases: liveObjects(Lease),
        open: stats.open,
        shared: [stats.shared, stats.pipelined, stats.sharedQueries],
        backends: await db.countConnections(applicationName),
        listenBackends: await db.countConnections(`${applicationName}/listen`),
        listener: app.pgPool.listener(),
        series: scrape.samples.length,
        logLines: logs.length,
        sessions: await sessions(),
        serverListeners: {
          request: app.server.listenerCount('request'),
          connection: app.server.listenerCount('connection'),
        },
      }
    }

    await sessions()
    await batch()
    await batch()
    const second = await snapshot()
    const logsAfterSecond = second.logLines
    await batch()
    const third = await snapshot()

    // The same work, the same counts.
    const observed = JSON.stringify({
      second: { ...second, sessions: undefined },
      third: { ...third, sessions: undefined },
    })
    // (+2: a timer armed at the moment of the count, housekeeping's or an HTTP socket's; growth
    // with the requests would be 75 a batch.)
    expect(third.timers, observed).toBeLessThanOrEqual(second.timers + 2)
    expect(third.liveTimers, observed).toBeLessThanOrEqual(second.liveTimers + 5)
    // Leases still referenced: postgres.js's origin cache keeps the first query of each call site.
    expect(third.leases, observed).toBeLessThanOrEqual(second.leases + 2)
    expect(third.shared).toEqual([0, 0, 0])
    expect(third.backends).toBe(third.open)
    expect(third.listenBackends).toBe(1)
    expect(third.listener).toMatchObject({ listeners: 1, channels: 1, connected: true })
    expect(third.series).toBe(second.series)
    expect(third.serverListeners).toEqual(second.serverListeners)
    // Every session clean; the statements kept are the fixed texts', the same number as before.
    for (const session of third.sessions) {
      expect(session).toMatchObject({ cursors: 0, advisory: 0, channels: 0, temps: 0 })
    }
    // Bounded by what a connection held after batch 2: a connection may meet a fixed text for the
    // first time in batch 3 (which request lands where is the machine's timing), but no text is
    // added per request, so none holds more than the most any held before.
    const mostBefore = Math.max(0, ...second.sessions.map((session) => session.prepared))
    for (const session of third.sessions) expect(session.prepared).toBeLessThanOrEqual(mostBefore)
    // Log lines per batch: the same number for the same requests (nothing that accumulates).
    expect(third.logLines - logsAfterSecond).toBeLessThanOrEqual(logsAfterSecond / 2 + 20)
    expect(warnings.filter((warning) => warning.includes('MaxListeners'))).toEqual([])
    // Every kind answered as designed, each batch.
    expect(Object.fromEntries(statuses)).toEqual({ 200: 1650, 404: 225, 409: 75, 500: 225, aborted: 150 })
    await kept.unlisten()
  }, 120_000)
})

/** The metrics plugin on a core app (coreApp registers the core alone). */
async function registerMetrics(app: FastifyInstance) {
  const { default: pgPoolMetrics } = await import('@fastify-pg-pool/metrics')
  await app.register(pgPoolMetrics, {})
  await app.ready()
  return { pgPoolMetrics: app.pgPoolMetrics }
}

describe('refusals', () => {
  test('100 rounds of a full queue (503 QUEUE_FULL and ACQUIRE_TIMEOUT): no waiter, timer or lease left', async () => {
    const { app } = await coreApp(db.directUrl, { max: 1, maxWaiting: 1, acquireTimeout: 50, pgbouncer: false })
    apps.push(app)
    app.get('/gate', async (request) => request.db`select pg_advisory_xact_lock(77)`)
    app.get('/quick', async (request) => request.db`select 1 as one`)
    const round = async () => {
      const gate = db.sql.reserve()
      const held = await gate
      await held`select pg_advisory_lock(77)`
      const blocked = app.inject('/gate')
      await waitUntil(() => app.pgPool.stats().leased === 1, 'the gate to hold the connection')
      const others = await Promise.all([app.inject('/quick'), app.inject('/quick'), app.inject('/quick')])
      await held`select pg_advisory_unlock(77)`
      held.release()
      expect((await blocked).statusCode).toBe(200)
      return others.map((response) => response.json<{ code: string }>().code).sort()
    }
    const first = await round()
    // One waits and times out (acquireTimeout 50 ms), the others find the queue full (on a slow
    // machine a second may get to wait once the first timed out).
    for (const code of first) expect(['FST_PG_POOL_ACQUIRE_TIMEOUT', 'FST_PG_POOL_QUEUE_FULL']).toContain(code)
    expect(first).toContain('FST_PG_POOL_ACQUIRE_TIMEOUT')
    await collectGarbage()
    const before = { timers: activeResources().Timeout ?? 0, leases: liveObjects(Lease) }
    for (let i = 0; i < 100; i++) await round()
    await collectGarbage()
    expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0 })
    expect(activeResources().Timeout ?? 0).toBeLessThanOrEqual(before.timers)
    expect(liveObjects(Lease)).toBeLessThanOrEqual(before.leases + 2)
  }, 60_000)
})

describe('health probes', () => {
  test('200 readiness probes (cache off), a quarter of them hung up on: no ping backend left, no timer left', async () => {
    const applicationName = uniqueName('probes')
    const app = Fastify({ logger: false })
    apps.push(app)
    await app.register(pgPool, {
      connection: db.directUrl,
      pool: { max: 1, applicationName, pgbouncer: false },
      health: { cacheTime: 0 },
      backpressure: false,
    })
    const base = await listen(app)
    const timersBefore = activeResources().Timeout ?? 0
    for (let round = 0; round < 50; round++) {
      const probes = [app.inject('/health/ready'), app.inject('/health'), app.inject('/health/live')]
      const hungUp = startRequest(`${base}/health/ready`)
      hungUp.abort()
      for (const probe of await Promise.all(probes)) expect(probe.statusCode).toBe(200)
      await hungUp.done
    }
    await waitUntil(async () => (await db.countConnections(`${applicationName}/ping`)) === 0, 'no ping backend', 5_000)
    expect(await db.countConnections(applicationName)).toBe(app.pgPool.stats().open)
    expect(activeResources().Timeout ?? 0).toBeLessThanOrEqual(timersBefore + 1)
  })
})

describe('apps created and closed in a loop', () => {
  test('30 apps with health, metrics, admission control and otel: no process listener, channel subscriber, timer or app left', async () => {
    const sdk = startTestSdk()
    const before = {
      listeners: processListeners(),
      resources: activeResources(),
    }
    await collectGarbage()
    const poolsBefore = liveObjects(Pool)
    const refs: WeakRef<FastifyInstance>[] = []
    for (let i = 0; i < 30; i++) {
      const app = Fastify({ logger: false })
      await app.register(pgPool, {
        connection: db.directUrl,
        pool: { max: 1, applicationName: uniqueName('loop'), pgbouncer: false },
        otel: { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider },
      })
      app.get('/q', async (request) => request.db`select 1 as one`)
      app.post('/tx', { config: { db: { transaction: true } } }, async (request) => request.db`select 1 as one`)
      await app.ready()
      expect((await app.inject('/q')).statusCode).toBe(200)
      expect((await app.inject({ method: 'POST', url: '/tx' })).statusCode).toBe(200)
      expect((await app.inject('/metrics')).statusCode).toBe(200)
      expect((await app.inject('/health/ready')).statusCode).toBe(200)
      await app.close()
      refs.push(new WeakRef(app))
    }
    sdk.reset()
    await collectGarbage()
    expect(processListeners()).toEqual(before.listeners)
    for (const name of Object.values(channelNames)) expect(channel(name).hasSubscribers, name).toBe(false)
    expect(activeResources().Timeout ?? 0).toBeLessThanOrEqual(before.resources.Timeout ?? 0)
    // At most two, whatever the number of apps: postgres.js's origin cache (a module-level Map,
    // one Error per tagged-template call site) keeps the call sites of the first query of each,
    // and with them that query's lease and its app (the core's own statements were first run by
    // the previous test's app, the routes' by this loop's first app).
    expect(refs.filter((ref) => ref.deref() !== undefined).length).toBeLessThanOrEqual(2)
    expect(liveObjects(Pool)).toBeLessThanOrEqual(poolsBefore + 2)
    await sdk.shutdown()
  }, 60_000)
})

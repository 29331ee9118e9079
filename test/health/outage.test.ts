import { createServer, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { sleep } from '../support/database.js'
import { type EmbeddedServer, freePort, startEmbeddedServer } from '../support/embedded-server.js'
import { listen } from '../support/http.js'
import { healthApp, type Probe, probe } from './support.js'

// Stopping a database is only done to a private server (other files share the run's server);
// these tests connect to it directly, also in the PgBouncer leg.
let server: EmbeddedServer
beforeAll(async () => {
  server = await startEmbeddedServer()
}, 120_000)
afterAll(async () => {
  await server?.destroy()
})

/** Probes `path` every 50 ms until `done` holds; returns the probe and the time it took. */
async function probeUntil(base: string, path: string, done: (p: Probe) => boolean, timeoutMs = 10_000) {
  const started = performance.now()
  for (;;) {
    const p = await probe(base, path)
    if (done(p)) return { probe: p, ms: performance.now() - started }
    if (performance.now() - started > timeoutMs)
      throw new Error(`still ${p.status} ${p.body.status} after ${timeoutMs} ms`)
    await sleep(50)
  }
}

describe('database outage', () => {
  test('stopped: ready 503 fail within pingTimeout + cacheTime, live 200; restarted: 200 again without an app restart', async () => {
    const pingTimeout = 500
    const cacheTime = 500
    const { app } = await healthApp(server.url, { pgbouncer: false, max: 2 }, { pingTimeout, cacheTime })
    app.get('/now', async (request) => {
      const [row] = await request.db<{ ok: number }[]>`select 1 as ok`
      return row
    })
    try {
      const base = await listen(app)
      expect((await probe(base, '/health/ready')).body.status).toBe('pass')
      expect((await fetch(`${base}/now`)).status).toBe(200)

      await server.stop()
      const down = await probeUntil(base, '/health/ready', (p) => p.status !== 200)
      // The slack covers the HTTP round trips and the 50 ms polling on a busy machine.
      expect(down.ms).toBeLessThan(pingTimeout + cacheTime + 500)
      expect(down.probe.status).toBe(503)
      expect(down.probe.body.status).toBe('fail')
      expect(down.probe.body.output).toBe('database unreachable (FST_PG_POOL_CONNECT_FAILED)')
      expect(down.probe.body.checks?.['postgres:responseTime']?.[0]).toMatchObject({
        status: 'fail',
        output: 'database unreachable (FST_PG_POOL_CONNECT_FAILED)',
      })
      expect((await probe(base, '/health')).status).toBe(503)
      const live = await probe(base, '/health/live')
      expect(live.status).toBe(200)
      expect(live.body.status).toBe('pass')

      await server.start()
      const up = await probeUntil(base, '/health/ready', (p) => p.status === 200)
      expect(up.ms).toBeLessThan(pingTimeout + cacheTime + 1_000)
      expect(up.probe.body.status).toBe('pass')
      // The pool, not only the probe, is back.
      let status = 0
      for (let i = 0; i < 40 && status !== 200; i++, await sleep(50)) status = (await fetch(`${base}/now`)).status
      expect(status).toBe(200)
    } finally {
      await app.close()
      await server.start()
    }
  })

  test("requireDatabase: 'startup': not ready until the first successful ping; later outages only warn", async () => {
    await server.stop()
    const { app } = await healthApp(
      server.url,
      { pgbouncer: false, lazy: true },
      { requireDatabase: 'startup', cacheTime: 100, pingTimeout: 500 },
    )
    try {
      const base = await listen(app)
      const before = await probe(base, '/health/ready')
      expect(before.status).toBe(503)
      expect(before.body.status).toBe('fail')

      await server.start()
      const up = await probeUntil(base, '/health/ready', (p) => p.status === 200)
      expect(up.probe.body.status).toBe('pass')

      await server.stop()
      const down = await probeUntil(base, '/health/ready', (p) => p.body.status !== 'pass')
      expect(down.probe.status).toBe(200)
      expect(down.probe.body.status).toBe('warn')
      expect(down.probe.body.checks?.['postgres:responseTime']?.[0]?.status).toBe('fail')
    } finally {
      await app.close()
      await server.start()
    }
  })
})

describe('a server that accepts and never answers', () => {
  test('ready fails after pingTimeout, not later', async () => {
    const sockets = new Set<Socket>()
    const hole = createServer((socket) => {
      sockets.add(socket)
      socket.on('error', () => {})
    })
    const port = await freePort()
    await new Promise<void>((resolve) => hole.listen(port, '127.0.0.1', resolve))
    const { app } = await healthApp(
      `postgres://postgres:pw@127.0.0.1:${port}/postgres`,
      { pgbouncer: false, lazy: true },
      { pingTimeout: 300 },
    )
    try {
      const ready = await probe(await listen(app), '/health/ready')
      expect(ready.status).toBe(503)
      expect(ready.ms).toBeGreaterThanOrEqual(290)
      // Well short of connectTimeout (5 s by default): the ping's own timeout applies.
      expect(ready.ms).toBeLessThan(300 + 500)
      expect(ready.body.output).toBe('database did not answer within 300 ms (FST_PG_POOL_QUERY_TIMEOUT)')
    } finally {
      await app.close()
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => hole.close(resolve))
    }
  })
})

describe('secrets', () => {
  test('a failing ping never puts the user, password, host or port in a body', async () => {
    const admin = (await import('postgres')).default(server.url, { max: 1, onnotice: () => {} })
    await admin.unsafe(`create role fpp_secret_user login password 'right-password-8f2c'`)
    await admin.end()
    const password = 'wrong-password-3b9d'
    const { app, logs } = await healthApp(
      `postgres://fpp_secret_user:${password}@127.0.0.1:${server.port}/postgres`,
      { pgbouncer: false, lazy: true },
      { pingTimeout: 2_000 },
    )
    try {
      const base = await listen(app)
      const texts: string[] = []
      for (const path of ['/health/ready', '/health', '/health/live']) {
        const res = await fetch(base + path)
        texts.push(await res.text())
      }
      const ready = JSON.parse(texts[0] as string)
      expect(ready.status).toBe('fail')
      expect(ready.output).toBe('database unreachable (FST_PG_POOL_CONNECT_FAILED)')
      for (const text of texts) {
        for (const secret of [password, 'fpp_secret_user', '127.0.0.1', String(server.port), 'authentication']) {
          expect(text).not.toContain(secret)
        }
      }
      // The readiness change was logged, without the password.
      expect(logs.some((line) => line.msg === 'readiness is fail')).toBe(true)
      expect(JSON.stringify(logs)).not.toContain(password)
    } finally {
      await app.close()
    }
  })
})

describe('connection budget', () => {
  test('max × instances above the server’s slots: postgres:budget warns, readiness stays 200 warn', async () => {
    // The private server allows 200 connections: 100 × 3 instances exceeds them.
    const { app } = await healthApp(server.url, { pgbouncer: false, max: 100, instances: 3 })
    try {
      const ready = await probe(await listen(app), '/health/ready')
      expect(ready.status).toBe(200)
      expect(ready.body.status).toBe('warn')
      const [budget] = ready.body.checks?.['postgres:budget'] ?? []
      expect(budget).toMatchObject({
        status: 'warn',
        observedValue: 300,
        maxConnections: 200,
        instances: 3,
      })
      expect(budget?.available).toBeLessThan(300)
      expect(ready.body.output).toContain('300 connections, more than the')
    } finally {
      await app.close()
    }
  })
})

import postgres from 'postgres'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { sleep, waitFor } from '../support/database.js'
import { type EmbeddedServer, startEmbeddedServer } from '../support/embedded-server.js'
import { listen } from '../support/http.js'
import { failOnProcessErrors, fastTimeouts } from './process-errors.js'

// A private server: stopping the run's shared one would break every other file.
let server: EmbeddedServer
let current: TestApp | undefined
failOnProcessErrors()
beforeAll(async () => {
  server = await startEmbeddedServer()
})
afterAll(async () => {
  await current?.app.close()
  await server?.destroy()
})

interface Outcome {
  readonly startedAt: number
  readonly ms: number
  readonly status: number
  readonly code: string | undefined
}

async function serverConnections(applicationName: string): Promise<number> {
  const admin = postgres(server.url, { max: 1, onnotice: () => {}, connect_timeout: 1 })
  try {
    const [row] = await admin<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity where application_name = ${applicationName}`
    return row?.n ?? 0
  } finally {
    await admin.end({ timeout: 1 })
  }
}

test('server restart under load: every request settles in time, the pool is back to full strength', async () => {
  const max = 4
  current = await coreApp(server.url, { max, maxWaiting: 100, idleTimeout: 0, ...fastTimeouts })
  const { app, applicationName } = current
  app.get('/work', async (request) => (await request.db`select pg_sleep(0.01), 1 as one`)[0])
  const base = await listen(app)

  // Bounded load: 8 clients, each one request at a time, for the whole restart.
  const outcomes: Outcome[] = []
  let running = true
  const client = async () => {
    while (running) {
      const startedAt = Date.now()
      const response = await fetch(`${base}/work`)
      const body = (await response.json()) as { code?: string }
      outcomes.push({ startedAt, ms: Date.now() - startedAt, status: response.status, code: body.code })
      // A failed request comes back in milliseconds: pace retries like a client would.
      if (response.status !== 200) await sleep(20)
    }
  }
  const clients = Array.from({ length: 8 }, client)

  await sleep(300)
  expect(app.pgPool.stats().open).toBe(max)
  const stopAt = Date.now()
  await server.stop()
  const stoppedMs = Date.now() - stopAt
  // Long enough for the reconnect backoff to reach its cap.
  await sleep(1_500)
  const startAt = Date.now()
  await server.start()
  const upAt = Date.now()
  const firstOkAfterStart = () => outcomes.find((o) => o.startedAt >= upAt && o.status === 200)
  const back = await waitFor(async () => app.pgPool.stats().open === max && app.pgPool.stats().connecting === 0, 5_000)
  const poolFullMs = Date.now() - upAt
  const onServer = await serverConnections(applicationName)
  await sleep(300)
  running = false
  await Promise.all(clients)

  const firstOk = firstOkAfterStart()
  const slowest = Math.max(...outcomes.map((o) => o.ms))
  const failed = outcomes.filter((o) => o.status !== 200)
  const codes = [...new Set(failed.map((o) => `${o.status} ${o.code}`))].sort()
  console.log(
    `[fault:restart] stop took ${stoppedMs} ms, start took ${upAt - startAt} ms; ` +
      `first 200 ${firstOk ? firstOk.startedAt + firstOk.ms - upAt : 'never'} ms after start; ` +
      `pool at full strength (${max}/${max}) ${poolFullMs} ms after start; ` +
      `${outcomes.length} requests, ${failed.length} failed (${codes.join(', ')}), slowest ${slowest} ms`,
  )

  expect(back).toBe(true)
  expect(poolFullMs).toBeLessThan(5_000)
  expect(onServer).toBe(max)
  // Settled: success or a coded, retryable error; never a hang past the deadlines.
  for (const o of failed)
    expect({ status: o.status, code: o.code?.startsWith('FST_PG_POOL_') }).toEqual({ status: 503, code: true })
  expect(failed.length).toBeGreaterThan(0)
  expect(slowest).toBeLessThan(fastTimeouts.acquireTimeout + fastTimeouts.statementTimeout)
  expect(outcomes.filter((o) => o.startedAt > upAt + poolFullMs).every((o) => o.status === 200)).toBe(true)
  expect(app.pgPool.stats()).toMatchObject({ leased: 0, waiting: 0, open: max })
})

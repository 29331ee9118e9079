import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'
import { listen } from '../support/http.js'
import { sendOk } from './support.js'

// Found by hostile probing (rollout): with the process's event loop kept busy (CPU-heavy
// handlers, the state of a CPU-saturated pod in an overload), readiness reports the idle database
// as slow or unreachable, and fails.
//
// What the user does: the umbrella with a readiness probe (packages/health/README.md), and routes
// that cost CPU (rendering, JSON of large rows). Under an overload the pod's event loop is busy
// back to back; the database is idle and answers at once.
//
// What they should get: "They tell the truth quickly" (health README): postgres:responseTime is
// the database's answer time; its outputs name the database ("slow database: ping took … ms",
// "database did not answer within … ms (FST_PG_POOL_QUERY_TIMEOUT)") and a `fail` there takes
// the pod out of the Service. The suite knows stalls are the process's, not the pool's: admission
// control subtracts them from hold times (packages/backpressure/README.md, "Hold times leave out
// event-loop stalls"), and the health README refuses to fail readiness for load, since every pod
// under the same load would fail and empty the Service ("Failing readiness on saturation ...
// empties the Service, so the default fails only when the queue is already full").
//
// What they get: the ping (packages/core/src/view.ts, `ping`) is timed, and its deadline fired,
// on the process clock: every event-loop turn it needs (connect, startup, authentication, query)
// waits behind the busy callbacks, so with 300 ms stalls and pingTimeout 200 ms every ping "times
// out": readiness answers 503 `database did not answer within 200 ms (FST_PG_POOL_QUERY_TIMEOUT)`
// (with the default pingTimeout 1000 ms, two clients looping on a 300 ms handler already gave
// `slow database: ping took 917 ms` warnings and intermittent 503s). Every pod of an overloaded
// Deployment can fail readiness at once, blaming a healthy database. A fix: time the ping without
// the event-loop stalls it overlapped (as admission's StallClock does), and report a stalled
// process as such rather than as the database.

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

describe('readiness while CPU-heavy handlers keep the event loop busy', () => {
  test('the idle database is not reported slow or unreachable', async () => {
    const server = Fastify()
    app = server
    await server.register(pgPool, {
      connection: db.url,
      pool: { max: 2, applicationName: uniqueName() },
      health: { pingTimeout: 200, cacheTime: 0 },
      backpressure: { process: false },
    })
    server.get('/render', { config: { db: false } }, async () => {
      const until = performance.now() + 300
      while (performance.now() < until) {}
      return { ok: true }
    })
    const base = await listen(server)
    expect((await sendOk(`${base}/health/ready`)).status).toBe(200)
    let busy = true
    const clients = Array.from({ length: 3 }, async () => {
      while (busy) await sendOk(`${base}/render`)
    })
    try {
      await new Promise((resolve) => setTimeout(resolve, 400))
      const outputs: string[] = []
      for (let i = 0; i < 3; i++) {
        const ready = await sendOk(`${base}/health/ready`)
        const body = JSON.parse(ready.body) as { status: string; output?: string }
        outputs.push(`${ready.status} ${body.status} ${body.output ?? ''}`)
      }
      // (The database is idle: nothing but the pings and this file's setup ever reaches it.)
      console.log(`[probe-rollout] readiness with a busy loop: ${outputs.join(' | ')}`)
      for (const output of outputs) expect(output).not.toMatch(/database did not answer|slow database/)
    } finally {
      busy = false
      await Promise.all(clients)
    }
  })
})

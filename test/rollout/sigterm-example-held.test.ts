import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../support/database.js'
import { type ExampleServer, startExampleServer } from './example-server.js'
import { send } from './support.js'

// Held attack from hostile probing (rollout): SIGTERM to examples/basic/src/server.js (the
// Kubernetes example's image) with requests in flight and queued, from clients that do not keep
// connections alive (see keepalive-shutdown.test.ts for those that do). packages/health/README.md
// "Draining and preStop": readiness fails, requests in flight finish with their connections, the
// pool closes; the example then exits.

let db: TestDatabase
let server: ExampleServer | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(() => {
  server?.kill()
  server = undefined
})
afterAll(() => db.drop())

const activeSleeps = async () =>
  (
    await db.sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where datname = current_database() and query like '%pg_sleep%' and state = 'active'
        and pid <> pg_backend_pid()`
  )[0]?.n ?? 0

const backends = async () =>
  (
    await db.sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where datname = current_database() and application_name like 'fastify-pg-pool%'`
  )[0]?.n ?? 0

describe('SIGTERM to the example server', () => {
  test('in flight and queued requests finish 200, transfers commit whole, readiness fails, the process exits 0 leaving no backend', async () => {
    server = await startExampleServer(db.url)
    const { base } = server
    const stock = async () =>
      (await db.sql<{ id: number; stock: number }[]>`select id, stock from items order by id`).map((r) => r.stock)
    const before = await stock()
    // The example's pool has max 10: ten sleeps hold every connection, the rest queue.
    const slow = Array.from({ length: 10 }, () => send(`${base}/slow?ms=700`))
    await waitUntil(async () => (await activeSleeps()) === 10, 'ten sleeps to run', 10_000)
    const moves = Array.from({ length: 3 }, () => send(`${base}/items/1/move/2`, { method: 'POST' }))
    const reads = [send(`${base}/items`), send(`${base}/items/2`)]
    // Queued behind the sleeps (the example exposes no stats: give them time to be read and queued;
    // a request that has not arrived yet when SIGTERM lands would be refused, counted below).
    await new Promise((resolve) => setTimeout(resolve, 200))
    server.child.kill('SIGTERM')
    // Readiness goes unready: Fastify's own 503 or a refused connection (health README), never 200 again.
    let ready = ''
    await waitUntil(
      async () => {
        const answer = await send(`${base}/health/ready`)
        ready = typeof answer === 'string' ? answer : String(answer.status)
        return ready !== '200'
      },
      'readiness to fail',
      5_000,
    )
    const answers = await Promise.all([...slow, ...moves, ...reads])
    const statuses = answers.map((a) => (typeof a === 'string' ? a : a.status))
    console.log(`[probe-rollout] SIGTERM: readiness ${ready}; answers ${statuses.join(' ')}`)
    expect(ready).toMatch(/^(503|error ECONNREFUSED|error ECONNRESET)$/)
    expect(statuses.slice(0, 10)).toEqual(Array(10).fill(200))
    // Requests that arrived before SIGTERM finish; none gets a 500.
    for (const status of statuses.slice(10))
      expect(String(status)).toMatch(/^(200|503|error ECONNREFUSED|error ECONNRESET)$/)
    expect(await server.waitExit(15_000)).toBe(true)
    expect(server.exited()).toEqual({ code: 0, signal: null })
    const after = await stock()
    const committed = statuses.slice(10, 13).filter((s) => s === 200).length
    // Each 200 move moved exactly one unit, each other one none: never half a transfer.
    expect(after[0]).toBe((before[0] as number) - committed)
    expect(after[1]).toBe((before[1] as number) + committed)
    expect(after.reduce((a, b) => a + b, 0)).toBe(before.reduce((a, b) => a + b, 0))
    expect(await waitFor(async () => (await backends()) === 0, 5_000)).toBe(true)
  }, 50_000)
})

import Fastify, { type FastifyInstance } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, uniqueName } from '../../../support/database.js'

/**
 * `backpressure.process.maxEventLoopUtilization` is documented as a process-pressure threshold
 * re-sampled every `sampleInterval` (process refusals carry Retry-After ceil(sampleInterval /
 * 1000) s "because the signal is re-sampled no sooner than that"). It is handed to
 * @fastify/under-pressure without `eventLoopUtilizationMode`, whose default is 'cumulative':
 * the utilisation since the plugin was registered. A busy stretch (a CPU-bound warm-up, a GC
 * storm) then keeps refusing every database route of an idle process for as long as it lasted
 * again, and a late overload of a long-running process never trips it. The option cannot be
 * passed: `process` refuses unknown keys.
 */

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

function busy(ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) {
    // CPU-bound work on the event loop.
  }
}

test('an idle process is admitted again a few samples after a busy stretch', async () => {
  const instance = Fastify()
  app = instance
  await instance.register(pgPool, {
    connection: db.url,
    pool: { max: 2, applicationName: uniqueName() },
    backpressure: { process: { maxEventLoopDelay: 0, maxEventLoopUtilization: 0.5, sampleInterval: 50 } },
  })
  instance.get('/db', async (request) => request.db`select 1 as one`)
  await instance.ready()
  expect((await instance.inject('/db')).statusCode).toBe(200)

  // Three seconds of CPU-bound work on the loop (a warm-up, a burst of JSON), then idle.
  busy(3_000)
  // The pressure is seen (sampled while the loop was busy).
  await sleep(120)
  // Idle from here on: within 30 samples (1.5 s), the process answers again.
  const statuses: number[] = []
  const deadline = performance.now() + 1_500
  let last = 0
  while (performance.now() < deadline) {
    const res = await instance.inject('/db')
    last = res.statusCode
    statuses.push(last)
    if (last === 200) break
    expect(res.json()).toMatchObject({ code: 'FST_PG_POOL_PROCESS_PRESSURE' })
    await sleep(100)
  }
  expect(last, `answers on an idle loop: ${statuses.join(',')}`).toBe(200)
}, 30_000)

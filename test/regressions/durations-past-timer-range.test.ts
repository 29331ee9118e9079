import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Durations were "integers >= min" with no upper bound. Node runs a timer of more than 2^31-1 ms
// after 1 ms (TimeoutOverflowWarning), and PostgreSQL refuses a statement_timeout past it: with
// pool.connectTimeout 2^31 every connection failed at once (CONNECT_FAILED), with
// pool.statementTimeout 2^31 the server refused every connection's setup.

const MAX_TIMER_MS = 2 ** 31 - 1

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db?.drop())

const ryw = (maxWait: number) => ({ readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait } })

/** The duration options of `pool`. */
const poolDurations = [
  'acquireTimeout',
  'idleTimeout',
  'maxLifetime',
  'connectTimeout',
  'statementTimeout',
  'leakDetectionThreshold',
  'closeTimeout',
]

/** Core options that set one duration to `ms`. */
type Setting = (ms: number) => object

/** Each duration option of the core, as its path and the options that set it. */
const coreDurations: [string, Setting][] = [
  ...poolDurations.map(
    (key) => [`pool.${key}`, (ms: number) => ({ pool: { lazy: true, [key]: ms } })] as [string, Setting],
  ),
  ['replica.lagInterval', (ms) => ({ pool: { lazy: true }, replica: { lagInterval: ms } })],
  ['replica.readYourWrites.maxWait', (ms) => ({ pool: { lazy: true }, replica: ryw(ms) })],
]

const healthDurations = ['pingTimeout', 'pingWarn', 'cacheTime', 'drainDelay']

/** Backpressure's durations, as the options that set one (target, interval, maxDelay may be fractions). */
const backpressureDurations: [string, Setting][] = [
  ['target', (ms) => ({ target: ms, maxDelay: ms })],
  ['interval', (ms) => ({ interval: ms })],
  ['maxDelay', (ms) => ({ maxDelay: ms })],
  ['retryStorm.delay', (ms) => ({ retryStorm: { delay: ms } })],
  ['process.sampleInterval', (ms) => ({ process: { sampleInterval: ms } })],
  ['process.maxEventLoopDelay', (ms) => ({ process: { maxEventLoopDelay: ms } })],
]

async function registerOutcome(register: (app: ReturnType<typeof Fastify>) => Promise<unknown>) {
  const app = Fastify()
  try {
    await register(app)
    await app.ready()
    return 'registered'
  } catch (error) {
    return error as Error & { code?: string }
  } finally {
    await app.close().catch(() => {})
  }
}

describe('a duration past what a timer can wait is refused at register, naming the option', () => {
  for (const [path, options] of coreDurations) {
    test(`${path}: 2^31 ms refused, 2^31-1 accepted`, async () => {
      const core = (ms: number) => (app: ReturnType<typeof Fastify>) =>
        app.register(pgPoolCore, { connection: db.url, ...options(ms) } as never)
      expect(await registerOutcome(core(MAX_TIMER_MS + 1))).toMatchObject({
        code: 'FST_PG_POOL_INVALID_OPTION',
        message: expect.stringContaining(`Invalid option ${path}: expected an integer`),
      })
      expect(await registerOutcome(core(MAX_TIMER_MS))).toBe('registered')
    })
  }

  for (const key of healthDurations) {
    test(`health ${key}: 2^31 ms refused`, async () => {
      const outcome = await registerOutcome(async (app) => {
        await app.register(pgPoolCore, { connection: db.url, pool: { lazy: true } })
        await app.register(pgPoolHealth, { [key]: MAX_TIMER_MS + 1 })
      })
      expect(outcome).toMatchObject({
        code: 'FST_PG_POOL_INVALID_OPTION',
        message: expect.stringContaining(`Invalid option health.${key}: expected an integer`),
      })
    })
  }

  for (const [path, options] of backpressureDurations) {
    test(`backpressure ${path}: 2^31 ms refused`, async () => {
      const outcome = await registerOutcome(async (app) => {
        await app.register(pgPoolCore, { connection: db.url, pool: { lazy: true } })
        await app.register(pgPoolBackpressure, options(MAX_TIMER_MS + 1) as never)
      })
      expect(outcome).toMatchObject({
        code: 'FST_PG_POOL_INVALID_OPTION',
        message: expect.stringContaining(`Invalid option backpressure.${path}`),
      })
    })
  }
})

import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by a second round of hostile probing (failed on 1c7775f):
// - a read-your-writes cookie with bad percent-encoding (`%E0%A4%A`) made every read-only route
//   answer an uncoded 500 "URI malformed": any client could. A malformed token is ignored.
// - pool.retryAfter and backpressure's min/maxRetryAfter had no upper bound: 1e21 was sent as
//   `Retry-After: 1e+21`, which is not delay-seconds (digits only). At most a day now.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const ryw = { secret: 'a-test-secret-of-some-length', cookie: 'pg-read-after', maxWait: 50 }

describe('a read-your-writes token from the client is never a 500', () => {
  test('a cookie with bad percent-encoding, or a malformed header token, is ignored', async () => {
    current = await coreApp(
      db.url,
      { max: 2 },
      {},
      { replicas: [db.url], replica: { lagInterval: 50, readYourWrites: ryw } },
    )
    current.app.get(
      '/r',
      { config: { db: { readOnly: true } } },
      async (request) => (await request.db`select 1 as one`)[0],
    )
    for (const cookie of ['pg-read-after=%E0%A4%A', 'pg-read-after=%', 'pg-read-after=0%2F1.abc']) {
      const response = await current.app.inject({ url: '/r', headers: { cookie } })
      expect(response.statusCode, `${cookie}: ${response.body}`).toBe(200)
    }
    for (const token of ['%E0%A4%A', '....', 'zz/zz.', '0/0.', 'FFFFFFFF/FFFFFFFF.']) {
      const response = await current.app.inject({ url: '/r', headers: { 'x-pg-read-after': token } })
      expect(response.statusCode, `${token}: ${response.body}`).toBe(200)
    }
  })
})

describe('Retry-After values are delay-seconds: bounded at register', () => {
  const registerOutcome = async (register: (app: ReturnType<typeof Fastify>) => Promise<unknown>) => {
    const app = Fastify()
    try {
      await register(app)
      await app.ready()
      return 'registered'
    } catch (error) {
      return (error as { code?: string; message?: string }).message
    } finally {
      await app.close().catch(() => {})
    }
  }
  const core = (retryAfter: number) => (app: ReturnType<typeof Fastify>) =>
    app.register(pgPoolCore, { connection: db.url, pool: { lazy: true, retryAfter } })
  const backpressure = (options: object) => async (app: ReturnType<typeof Fastify>) => {
    await app.register(pgPoolCore, { connection: db.url, pool: { lazy: true } })
    await app.register(pgPoolBackpressure, { process: false, ...options } as never)
  }

  test.each([
    ['pool.retryAfter', core(1e21)],
    ['backpressure.minRetryAfter', backpressure({ minRetryAfter: 1e21 })],
    ['backpressure.maxRetryAfter', backpressure({ maxRetryAfter: 86_401 })],
    ['backpressure.retryAfter.min', backpressure({ retryAfter: { min: 1e21 } })],
  ])('%s past a day is refused', async (name, register) => {
    expect(await registerOutcome(register)).toContain(`Invalid option ${name}`)
  })

  test('a day is accepted', async () => {
    expect(await registerOutcome(core(86_400))).toBe('registered')
    expect(await registerOutcome(backpressure({ minRetryAfter: 86_400, maxRetryAfter: 86_400 }))).toBe('registered')
  })
})

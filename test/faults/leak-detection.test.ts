import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitFor } from '../support/database.js'
import { failOnProcessErrors } from './process-errors.js'

let db: TestDatabase
let current: TestApp | undefined
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  vi.restoreAllMocks()
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const LEAK_MESSAGE = 'database connection held longer than leakDetectionThreshold'

describe('leak detection', () => {
  test('a lease held past leakDetectionThreshold logs one warning with method, route, request id, held time', async () => {
    let n = 0
    current = await coreApp(db.url, { max: 1, leakDetectionThreshold: 150 }, { genReqId: () => `req-leak-${++n}` })
    const { app, logs } = current
    const leaks: number[] = []
    app.pgPool.on('leak', (heldMs) => leaks.push(heldMs))
    app.get('/hold/:id', async (request) => {
      await request.db`select 1`
      await sleep(700)
      return { ok: true }
    })
    app.get('/quick', async (request) => request.db`select 1`)
    expect((await app.inject('/quick')).statusCode).toBe(200)
    expect((await app.inject('/hold/7')).statusCode).toBe(200)
    const warnings = logs.filter((line) => line.msg === LEAK_MESSAGE)
    // Held ~700 ms against a 150 ms threshold: still one warning, not one per sweep.
    expect(warnings).toHaveLength(1)
    const [warning] = warnings
    expect(warning).toMatchObject({ level: 40, method: 'GET', route: '/hold/:id', reqId: 'req-leak-2', threshold: 150 })
    expect(warning?.heldMs).toBeGreaterThanOrEqual(150)
    expect(warning?.heldMs).toBeLessThan(700)
    expect(leaks).toHaveLength(1)
  })

  test('every lease held too long warns, also on a connection that warned before', async () => {
    let n = 0
    current = await coreApp(db.url, { max: 1, leakDetectionThreshold: 100 }, { genReqId: () => `req-${++n}` })
    const { app, logs } = current
    app.get('/hold', async (request) => {
      await request.db`select 1`
      await sleep(300)
      return { ok: true }
    })
    await app.inject('/hold')
    await app.inject('/hold')
    const warnings = logs.filter((line) => line.msg === LEAK_MESSAGE)
    expect(warnings.map((w) => w.reqId)).toEqual(['req-1', 'req-2'])
  })

  test('leases shorter than the threshold and a threshold of 0 never warn', async () => {
    current = await coreApp(db.url, { max: 2, leakDetectionThreshold: 0 })
    const { app, logs } = current
    app.get('/hold', async (request) => {
      await request.db`select pg_sleep(0.3)`
      return { ok: true }
    })
    await app.inject('/hold')
    await current.app.close()
    current = await coreApp(db.url, { max: 2, leakDetectionThreshold: 1_000 })
    current.app.get('/quick', async (request) => request.db`select 1`)
    for (let i = 0; i < 5; i++) await current.app.inject('/quick')
    expect([...logs, ...current.logs].filter((line) => line.msg === LEAK_MESSAGE)).toEqual([])
  })
})

describe('server notices', () => {
  test('go to the logger at debug, never to console.log', async () => {
    const consoleLog = vi.spyOn(console, 'log')
    current = await coreApp(db.url, { max: 1 })
    const { app, logs } = current
    app.get('/notice', async (request) => {
      await request.db.unsafe(`do $$ begin raise notice 'hello from plpgsql %', 42; end $$`)
      await request.db.unsafe(`do $$ begin raise warning 'careful %', 7; end $$`)
      return { ok: true }
    })
    expect((await app.inject('/notice')).statusCode).toBe(200)
    expect(await waitFor(() => logs.filter((line) => line.msg === 'postgres notice').length >= 2)).toBe(true)
    const notices = logs.filter((line) => line.msg === 'postgres notice')
    expect(notices.map((line) => line.level)).toEqual(notices.map(() => 20))
    // Severity and code, never the text: a notice can quote a statement's values.
    expect(notices.map((line) => line.notice)).toEqual(
      expect.arrayContaining([
        { severity: 'NOTICE', code: '00000' },
        { severity: 'WARNING', code: '01000' },
      ]),
    )
    expect(JSON.stringify(notices)).not.toMatch(/hello from plpgsql|careful/)
    expect(consoleLog).not.toHaveBeenCalled()
  })
})

import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyRequest } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

// Issue 17 item 5: a cursor loop kept its backend busy and its lease held for seconds after
// the client hung up or handlerTimeout fired (fd52652), while a plain statement was cancelled
// at once. Every form of query stops on abort and on handlerTimeout, and the lease comes back
// without waiting for the handler's own code (the requirement is 100 ms; the assertion allows a
// loaded machine more, and the measured time is printed).

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

type Work = (db: FastifyRequest['db']) => Promise<unknown>

// Each runs for many seconds unless stopped: in the server (pg_sleep), or in the handler's own
// code between batches (the cursor consumer sleeps).
const forms: Record<string, Work> = {
  'cursor (for await)': async (db) => {
    for await (const _rows of db`select g, pg_sleep(0.001) from generate_series(1, 100000) g`.cursor(50)) {
      await sleep(100)
    }
  },
  'cursor (callback)': (db) =>
    db`select g from generate_series(1, 100000) g`.cursor(50, async () => {
      await sleep(100)
    }),
  forEach: (db) => db`select pg_sleep(0.01) from generate_series(1, 1000)`.forEach(() => {}),
  execute: (db) => db`select pg_sleep(10) as exec`.execute(),
  simple: (db) => db`select pg_sleep(10) as simple`.simple(),
  values: (db) => db`select pg_sleep(10) as vals`.values(),
  raw: (db) => db`select pg_sleep(10) as rawq`.raw(),
  unsafe: (db) => db.unsafe('select pg_sleep(10) as unsafe_q'),
  'begin (statement)': (db) =>
    db.begin(async (sql) => {
      await sql`select pg_sleep(10) as in_begin`
    }),
  'begin (handler code between statements)': (db) =>
    db.begin(async (sql) => {
      await sql`select 1`
      await sleep(10_000)
      await sql`select 2`
    }),
}

async function measureStop(form: string, work: Work, stop: 'abort' | 'timeout'): Promise<number> {
  current = await coreApp(db.url, { max: 1 })
  const { app, applicationName } = current
  let settled: unknown
  const handler = async (request: FastifyRequest) => {
    try {
      await work(request.db)
      settled = 'finished'
    } catch (error) {
      settled = (error as { code?: string }).code ?? error
    }
    return 'done'
  }
  app.get('/work', stop === 'timeout' ? { handlerTimeout: 300 } : {}, handler)
  app.get('/next', async (request) => (await request.db`select 'next' as v`)[0])
  const base = await listen(app)
  const client = startRequest(`${base}/work`)
  // Started: leased, and the server has seen the statement.
  await waitUntil(
    async () => app.pgPool.stats().leased === 1 && (await db.countConnections(applicationName)) >= 1,
    `${form} to start`,
  )
  let stoppedAt: number
  if (stop === 'abort') {
    await sleep(200)
    stoppedAt = performance.now()
    client.abort()
    await client.done
  } else {
    // handlerTimeout answered 503: the handler's work is stopped from then on.
    expect(await client.done).toBe(503)
    stoppedAt = performance.now()
  }
  const back = await waitFor(() => app.pgPool.stats().leased === 0, 3_000, 2)
  const elapsed = performance.now() - stoppedAt
  expect(back, `${form}: lease back after ${stop}`).toBe(true)
  // Nothing of it still runs on the server.
  expect(await waitFor(async () => (await db.running(applicationName, '%pg_sleep%')) === 0, 2_000)).toBe(true)
  // The pool serves the next request at once.
  const next = await fetch(`${base}/next`)
  expect(next.status).toBe(200)
  expect(settled === undefined || settled !== 'finished').toBe(true)
  return elapsed
}

describe('every form of query stops when the request ends', () => {
  for (const [form, work] of Object.entries(forms)) {
    for (const stop of ['abort', 'timeout'] as const) {
      test(`${form}: ${stop === 'abort' ? 'client hangs up' : 'handlerTimeout'}`, async () => {
        const elapsed = await measureStop(form, work, stop)
        console.log(`${form} / ${stop}: lease back ${elapsed.toFixed(0)} ms after the stop`)
        expect(elapsed).toBeLessThan(1_000)
      })
    }
  }
})

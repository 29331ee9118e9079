import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyRequest } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

// Hostile probing: a cursor of a pipelined request that waits on the handler's own loop when the
// client hangs up or handlerTimeout fires. README ("Aborts, timeouts and cancels"): "What only the
// handler could move on ends with the request too, whatever its outcome ... A cursor still waiting
// for the handler's next call is ended"; for pipelined routes only a *running statement* is left
// to its end (no cancel request). A cursor waiting for the handler needs no cancel to end.

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

// Each would run for 100+ seconds unless stopped: the handler's loop sleeps between batches.
const forms: Record<string, Work> = {
  'cursor (for await)': async (db) => {
    for await (const _rows of db`select g from generate_series(1, 100000) g`.cursor(50)) {
      await sleep(100)
    }
  },
  'cursor (callback)': (db) =>
    db`select g from generate_series(1, 100000) g`.cursor(50, async () => {
      await sleep(100)
    }),
}

describe('a pipelined cursor waiting on its handler when the request ends', () => {
  for (const [form, work] of Object.entries(forms)) {
    for (const stop of ['abort', 'timeout'] as const) {
      test(`${form}: ${stop === 'abort' ? 'client hangs up' : 'handlerTimeout'}: the share comes back, a neighbour is served`, async () => {
        current = await coreApp(db.url, { max: 1, pipelineDepth: 4 })
        const { app } = current
        let settled: unknown
        app.get(
          '/work',
          { config: { db: { pipeline: true } }, ...(stop === 'timeout' ? { handlerTimeout: 300 } : {}) },
          async (request) => {
            try {
              await work(request.db)
              settled = 'finished'
            } catch (error) {
              settled = (error as { code?: string }).code ?? error
            }
            return 'done'
          },
        )
        app.get(
          '/next',
          { config: { db: { pipeline: true } } },
          async (request) => (await request.db`select 'next' as v`)[0],
        )
        const base = await listen(app)
        const client = startRequest(`${base}/work`)
        await waitUntil(() => app.pgPool.stats().pipelined === 1, `${form} to start`)
        if (stop === 'abort') {
          await sleep(200)
          client.abort()
          await client.done
        } else {
          expect(await client.done).toBe(503)
        }
        const back = await waitFor(() => app.pgPool.stats().leased === 0, 3_000)
        const next = await app.inject('/next')
        expect({ back, next: next.statusCode, settled: settled === 'finished' ? 'finished' : 'stopped' }).toEqual({
          back: true,
          next: 200,
          settled: 'stopped',
        })
      }, 30_000)
    }
  }
})

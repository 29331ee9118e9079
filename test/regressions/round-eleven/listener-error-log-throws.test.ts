// Round eleven, second round (attacks on its fixes): the guard around app.pgPool.on() listeners (core view.ts) logs the
// listener's error with `log.error({ err })` inside its catch, unguarded. An error the logger
// cannot serialize (pino reads every enumerable property: one whose getter throws) makes the
// log call throw, and that throw escapes into the pool's emit again: the request answers 500
// (for 'release'); for a listener returning a rejected promise it becomes an unhandled
// rejection (a crash under Node's default --unhandled-rejections=throw).
// README (core, app.pgPool.on): "one that throws (or returns a promise that rejects) is logged
// at error with its event and changes nothing else".
import { afterAll, beforeAll, expect, test } from 'vitest'
import { coreApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

/** An Error with an enumerable property whose getter throws (as some client libraries' errors have). */
function unloggableError(): Error {
  const error = new Error('listener bug')
  Object.defineProperty(error, 'details', {
    enumerable: true,
    get() {
      throw new Error('details are not loaded')
    },
  })
  return error
}

test("a throwing 'release' listener whose error the logger cannot serialize changes nothing", async () => {
  const { app } = await coreApp(db.url, { max: 1 })
  app.pgPool.on('release', () => {
    throw unloggableError()
  })
  app.get('/', async (request) => (await request.db`select 1 as one`)[0])
  try {
    const statuses: number[] = []
    for (let i = 0; i < 2; i++) statuses.push((await app.inject('/')).statusCode)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(statuses).toEqual([200, 200])
  } finally {
    await app.close()
  }
})

test("a rejecting 'acquire' listener whose error the logger cannot serialize leaves no unhandled rejection", async () => {
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown) => void unhandled.push(reason)
  // vitest's own handler would fail the run; this test counts them instead.
  const previous = process.listeners('unhandledRejection')
  process.removeAllListeners('unhandledRejection')
  process.on('unhandledRejection', onUnhandled)
  const { app } = await coreApp(db.url, { max: 1 })
  app.pgPool.on('acquire', async () => {
    throw unloggableError()
  })
  try {
    expect(await app.db`select 1 as one`).toEqual([{ one: 1 }])
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(unhandled.map((reason) => (reason as Error).message)).toEqual([])
  } finally {
    process.off('unhandledRejection', onUnhandled)
    for (const listener of previous) process.on('unhandledRejection', listener)
    await app.close()
  }
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'

// Issue 21's trace context to the server: a per-lease application_name (e.g. traceparent and
// route) visible in pg_stat_activity while the request runs a statement; the pool's own name back
// after it, whatever the session reset mode; one prepared statement for every lease.

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

const byRequest = (request: { id: string } | undefined, route: string) =>
  request === undefined ? undefined : `req ${request.id} ${route}`

async function nameSeen(app: TestApp['app'], path: string): Promise<string> {
  const response = await app.inject(path)
  expect(response.statusCode).toBe(200)
  return response.json().name
}

describe('leaseApplicationName', () => {
  test("a running statement shows the lease's name in pg_stat_activity; the pool's is back after the request", async () => {
    current = await coreApp(db.url, { max: 1 }, {}, { leaseApplicationName: byRequest })
    const { app, applicationName } = current
    app.get('/items/:id', async (request) => {
      const [row] = await request.db`select current_setting('application_name') as name`
      return row
    })
    app.get('/sleep', async (request) => {
      await request.db`select pg_sleep(0.5)`
      return { name: 'slept' }
    })
    app.get('/pool', async () => {
      const [row] = await app.db`select current_setting('application_name') as name`
      return row
    })
    expect(await nameSeen(app, '/items/1')).toMatch(/^req req-\d+ \/items\/:id$/)
    // The next holder (a job on app.db) gets the pool's name: the reset restored it.
    expect(await nameSeen(app, '/pool')).toBe(applicationName)

    // Seen from outside while the statement runs.
    const sleeping = app.inject('/sleep')
    let running: string | undefined
    await waitUntil(async () => {
      const rows = await db.admin<{ application_name: string }[]>`
        select application_name from pg_stat_activity
        where query = 'select pg_sleep(0.5)' and state = 'active'
          and datname = ${new URL(db.directUrl).pathname.slice(1)}`
      running = rows[0]?.application_name
      return running !== undefined
    }, 'the sleeping statement in pg_stat_activity')
    expect(running).toMatch(/^req req-\d+ \/sleep$/)
    expect((await sleeping).statusCode).toBe(200)

    // The reset that restores the pool's name is queued behind the response, not awaited.
    await waitUntil(async () => {
      const [row] = await db.admin<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity where application_name = ${applicationName}`
      return row?.n === 1
    }, "the pool's name back on its one connection")
    // One prepared statement however many leases were labelled: the name is a parameter.
    for (let i = 0; i < 5; i++) await app.inject(`/items/${i}`)
    const [{ statements = 0 } = {}] = await app.db<{ statements: number }[]>`
      select count(*)::int as statements from pg_prepared_statements where statement like '%set_config(''application_name''%'`
    expect(statements).toBe(1)
  })

  test("sessionReset 'rollback' and 'never' still give the next holder the pool's name", async () => {
    for (const sessionReset of ['rollback', 'never'] as const) {
      current = await coreApp(db.url, { max: 1, sessionReset }, {}, { leaseApplicationName: byRequest })
      const { app, applicationName } = current
      app.get('/mine', async (request) => {
        const [row] = await request.db`select current_setting('application_name') as name`
        return row
      })
      app.get('/pool', async () => {
        const [row] = await app.db`select current_setting('application_name') as name`
        return row
      })
      expect(await nameSeen(app, '/mine')).toMatch(/^req req-\d+ \/mine$/)
      expect(await nameSeen(app, '/pool')).toBe(applicationName)
      await app.close()
      current = undefined
    }
  })

  test('a label that returns nothing, or throws, keeps the pool name and the request succeeds (warned once)', async () => {
    const calls: string[] = []
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        leaseApplicationName: (_request, route) => {
          calls.push(route)
          if (route === '/quiet') return undefined
          throw new Error('label broke')
        },
      },
    )
    const { app, applicationName, logs } = current
    for (const path of ['/quiet', '/loud']) {
      app.get(path, async (request) => {
        const [row] = await request.db`select current_setting('application_name') as name`
        return row
      })
    }
    expect(await nameSeen(app, '/quiet')).toBe(applicationName)
    expect(await nameSeen(app, '/loud')).toBe(applicationName)
    expect(await nameSeen(app, '/loud')).toBe(applicationName)
    expect(calls.filter((route) => route.startsWith('/'))).toEqual(['/quiet', '/loud', '/loud'])
    const warnings = logs.filter((line) => String(line.msg).startsWith('leaseApplicationName threw'))
    expect(warnings).toHaveLength(1)
  })

  test('pipelined routes share a session: they are never labelled', async () => {
    current = await coreApp(db.url, { max: 1 }, {}, { leaseApplicationName: byRequest })
    const { app, applicationName } = current
    app.get('/shared', { config: { db: { pipeline: true } } }, async (request) => {
      const [row] = await request.db`select current_setting('application_name') as name`
      return row
    })
    expect(await nameSeen(app, '/shared')).toBe(applicationName)
  })

  test('refused at register: not a function, or behind PgBouncer (the server session is shared)', async () => {
    for (const [options, pattern] of [
      [{ leaseApplicationName: 'trace' }, /leaseApplicationName.*expected a function/],
      [{ leaseApplicationName: byRequest, pool: { pgbouncer: true } }, /leaseApplicationName.*PgBouncer/],
    ] as const) {
      const app = Fastify()
      await expect(
        app.register(pgPoolCore, { connection: db.url, ...(options as object) }).ready(),
      ).rejects.toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION', message: expect.stringMatching(pattern) })
      await app.close()
    }
  })
})

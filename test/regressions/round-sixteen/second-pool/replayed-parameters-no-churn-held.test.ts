// Round sixteen (second-pool), held: this round's fix retires a pool connection behind PgBouncer on
// which a request changed a parameter PgBouncer replays (server-connection.ts REPLAYED_PARAMETERS,
// pool.ts #putBack). Tried, for churn (a pool connection closed, and a new PgBouncer client
// connection opened, for a request that left nothing behind):
// - startup values given in another spelling than the server reports them (TimeZone 'utc',
//   DateStyle 'iso, dmy', client_encoding 'utf8', an application_name longer than the server's
//   63 bytes), then a SET LOCAL of that parameter in a transaction the request committed;
// - route transactions (`config.db.transaction`) setting TimeZone or application_name with
//   set_config(..., true) or SET LOCAL, committed or failed (the handler threw), and a plain SET in
//   a route transaction that failed (rolled back with it);
// - a pipelined route running set_config(..., true) (its own implicit transaction);
// - PgBouncer's application_name_add_host = 1 (its client's application_name is not what it sent),
//   two apps taking turns on one server connection.
// Each keeps its one pool connection (the same PgBouncer client port, no close event), and the
// next request sees the session's own values.
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'
import { type PgBouncer, startPgBouncer } from '../../../support/pgbouncer.js'

let db: TestDatabase
const bouncers: PgBouncer[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  for (const bouncer of bouncers) await bouncer.stop()
  await db?.drop()
})

async function bouncer(settings: Record<string, string | number> = {}): Promise<PgBouncer> {
  const started = await startPgBouncer({
    upstream: db.directUrl,
    defaultPoolSize: 1,
    settings: { server_reset_query_always: 1, ...settings },
  })
  bouncers.push(started)
  return started
}

/** PgBouncer's client connections of the test database (the pool's connections), by port. */
async function clientPorts(via: PgBouncer): Promise<number[]> {
  const database = new URL(db.directUrl).pathname.slice(1)
  return (await via.admin('SHOW CLIENTS'))
    .filter((row) => row.database === database)
    .map((row) => Number(row.port))
    .sort((a, b) => a - b)
}

interface Churn {
  readonly app: TestApp
  readonly closes: string[]
}

async function app(url: string, applicationName?: string): Promise<Churn> {
  const current = await coreApp(url, {
    max: 1,
    pgbouncer: true,
    ...(applicationName === undefined ? {} : { applicationName }),
  })
  const closes: string[] = []
  current.app.pgPool.on('close', (reason) => {
    closes.push(reason)
  })
  current.app.post('/run', async (request) => {
    await request.db.unsafe((request.body as { statement: string }).statement)
    return { ok: true }
  })
  current.app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
    const { statement, fail } = request.body as { statement: string; fail: boolean }
    await request.db.unsafe(statement)
    if (fail) throw new Error('the handler failed')
    return { ok: true }
  })
  current.app.post('/pipelined', { config: { db: { pipeline: true } } }, async (request) => {
    await request.db.unsafe((request.body as { statement: string }).statement)
    return { ok: true }
  })
  current.app.get('/show', async (request) => {
    const [row] = await request.db<{ tz: string; ds: string; enc: string; app: string }[]>`
      select current_setting('TimeZone') as tz, current_setting('DateStyle') as ds,
        current_setting('client_encoding') as enc, current_setting('application_name') as app`
    return row
  })
  await current.app.ready()
  return { app: current, closes }
}

async function post(churn: Churn, url: string, payload: object): Promise<number> {
  return (await churn.app.app.inject({ method: 'POST', url, payload })).statusCode
}

describe('behind PgBouncer, requests that leave no replayed parameter changed keep their connection', () => {
  test.each([
    ['TimeZone', 'utc', "begin; set local timezone = 'Asia/Tokyo'; commit"],
    ['DateStyle', 'iso, dmy', "begin; set local datestyle = 'German'; commit"],
    ['client_encoding', 'utf8', "begin; set local client_encoding = 'LATIN1'; commit"],
    ['application_name', 'a'.repeat(70), "begin; set local application_name = 'someone'; commit"],
  ])('startup %s spelled %j, then a SET LOCAL in a committed transaction', async (name, value, statement) => {
    const via = await bouncer()
    const url = new URL(via.via(db.directUrl))
    if (name !== 'application_name') url.searchParams.set(name, value)
    const churn = await app(url.toString(), name === 'application_name' ? value : undefined)
    try {
      const clean = (await churn.app.app.inject('/show')).json()
      for (let i = 0; i < 3; i++) expect(await post(churn, '/run', { statement })).toBe(200)
      expect((await churn.app.app.inject('/show')).json()).toEqual(clean)
      expect(churn.closes).toEqual([])
      expect(churn.app.app.pgPool.stats()).toMatchObject({ open: 1 })
    } finally {
      await churn.app.app.close()
    }
  })

  test('route transactions and a pipelined route setting replayed parameters for themselves', async () => {
    const via = await bouncer()
    const churn = await app(via.via(db.directUrl))
    try {
      const clean = (await churn.app.app.inject('/show')).json()
      const before = await clientPorts(via)
      const cases: [string, object, number][] = [
        ['/tx', { statement: "select set_config('TimeZone', 'Asia/Tokyo', true)", fail: false }, 200],
        ['/tx', { statement: "select set_config('application_name', 'tenant-7', true)", fail: false }, 200],
        ['/tx', { statement: "set local timezone = 'Asia/Tokyo'", fail: true }, 500],
        ['/tx', { statement: "set timezone = 'Asia/Tokyo'", fail: true }, 500],
        ['/pipelined', { statement: "select set_config('TimeZone', 'Asia/Tokyo', true)" }, 200],
      ]
      for (const [url, payload, status] of cases) {
        expect(await post(churn, url, payload), JSON.stringify(payload)).toBe(status)
        expect((await churn.app.app.inject('/show')).json()).toEqual(clean)
      }
      expect(churn.closes).toEqual([])
      expect(await clientPorts(via)).toEqual(before)
    } finally {
      await churn.app.app.close()
    }
  })

  test('application_name_add_host = 1, two apps taking turns on one server connection', async () => {
    const via = await bouncer({ application_name_add_host: 1 })
    const one = await app(via.via(db.directUrl))
    const two = await app(via.via(db.directUrl))
    try {
      const clean = [(await one.app.app.inject('/show')).json(), (await two.app.app.inject('/show')).json()]
      const before = await clientPorts(via)
      const statement = "select set_config('TimeZone', 'Asia/Tokyo', true)"
      for (let i = 0; i < 4; i++) {
        const statuses = await Promise.all([
          post(one, '/tx', { statement, fail: false }),
          post(two, '/tx', { statement, fail: false }),
          one.app.app.inject('/show').then((r) => r.statusCode),
          two.app.app.inject('/show').then((r) => r.statusCode),
        ])
        expect(statuses).toEqual([200, 200, 200, 200])
      }
      expect([(await one.app.app.inject('/show')).json(), (await two.app.app.inject('/show')).json()]).toEqual(clean)
      expect([one.closes, two.closes]).toEqual([[], []])
      expect(await clientPorts(via)).toEqual(before)
    } finally {
      await one.app.app.close()
      await two.app.app.close()
    }
  })
})

import pgPoolCore, { type PgPoolView } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, uniqueName, waitUntil } from '../support/database.js'

declare module '@fastify-pg-pool/core' {
  interface PgPoolInstances {
    reporting: true
  }
}

// Issue 19: app.db.listen(channel, fn) on a connection of its own outside the lease pool,
// listened to again after a lost connection, ended on app.close().

let db: TestDatabase
let other: TestDatabase
const apps: FastifyInstance[] = []
failOnProcessErrors()

beforeAll(async () => {
  db = await createTestDatabase()
  other = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(async () => {
  await db.drop()
  await other.drop()
})

/** The core on this file's database, never through PgBouncer (LISTEN needs a session). */
async function start(): Promise<TestApp> {
  const test = await coreApp(db.directUrl, { pgbouncer: false, max: 2 })
  apps.push(test.app)
  return test
}

interface Received {
  readonly channel: string
  readonly payload: string
}

function collector() {
  const received: Received[] = []
  return { received, handler: (n: Received) => void received.push({ channel: n.channel, payload: n.payload }) }
}

/** Notifies from outside the app (the test's own client): what another service would do. */
async function notify(channel: string, payload: string, target: TestDatabase = db): Promise<void> {
  await target.sql`select pg_notify(${channel}, ${payload})`
}

describe('LISTEN/NOTIFY', () => {
  test('a notification reaches its channel’s listeners with channel and payload; unlisten stops them', async () => {
    const { app, applicationName } = await start()
    const orders = collector()
    const alsoOrders = collector()
    const stock = collector()
    const listening = await app.db.listen('orders', orders.handler)
    await app.db.listen('orders', alsoOrders.handler)
    await app.db.listen('stock "quoted"', stock.handler)
    // One connection of its own for every channel, outside the lease pool.
    expect(await db.countConnections(`${applicationName}/listen`)).toBe(1)
    expect(app.pgPool.stats().leased).toBe(0)
    expect(app.pgPool.listener()).toMatchObject({ listeners: 3, channels: 2, connected: true })

    await notify('orders', 'order 1')
    await app.db.notify('stock "quoted"', 'apples: 3')
    await waitUntil(() => orders.received.length === 1 && stock.received.length === 1, 'both notifications')
    expect(orders.received).toEqual([{ channel: 'orders', payload: 'order 1' }])
    expect(alsoOrders.received).toEqual([{ channel: 'orders', payload: 'order 1' }])
    expect(stock.received).toEqual([{ channel: 'stock "quoted"', payload: 'apples: 3' }])

    await listening.unlisten()
    await listening.unlisten() // idempotent
    await notify('orders', 'order 2')
    await waitUntil(() => alsoOrders.received.length === 2, 'the other orders listener')
    expect(orders.received).toHaveLength(1)
    expect(app.pgPool.listener()).toMatchObject({ listeners: 2, channels: 2, notifications: 3 })
  })

  test('unlistening the last channel closes the connection; listening again opens one', async () => {
    const { app, applicationName } = await start()
    const first = collector()
    const listening = await app.db.listen('jobs', first.handler)
    await listening.unlisten()
    await waitUntil(async () => (await db.countConnections(`${applicationName}/listen`)) === 0, 'no LISTEN connection')
    expect(app.pgPool.listener()).toMatchObject({ listeners: 0, channels: 0, connected: false })
    await notify('jobs', 'lost')
    const second = collector()
    await app.db.listen('jobs', second.handler)
    await notify('jobs', 'heard')
    await waitUntil(() => second.received.length === 1, 'the new listener')
    expect(first.received).toEqual([])
    expect(second.received).toEqual([{ channel: 'jobs', payload: 'heard' }])
  })

  test('a terminated listener backend is replaced and notifications flow again', async () => {
    const { app, applicationName, logs } = await start()
    const events = collector()
    await app.db.listen('events', events.handler)
    await notify('events', 'before')
    await waitUntil(() => events.received.length === 1, 'the first notification')

    const [before] = await db.admin<{ pid: number }[]>`
      select pid from pg_stat_activity where application_name = ${`${applicationName}/listen`}`
    expect(await db.terminate(`${applicationName}/listen`)).toBe(1)
    await waitUntil(() => app.pgPool.listener().reconnections === 1, 'the channel listened to again', 10_000)
    expect(app.pgPool.listener()).toMatchObject({ connected: true, listeners: 1, channels: 1 })
    const [after] = await db.admin<{ pid: number }[]>`
      select pid from pg_stat_activity where application_name = ${`${applicationName}/listen`}`
    expect(after?.pid).toBeDefined()
    expect(after?.pid).not.toBe(before?.pid)

    await notify('events', 'after')
    await waitUntil(() => events.received.length === 2, 'a notification after the new connection')
    expect(events.received.map((n) => n.payload)).toEqual(['before', 'after'])
    expect(logs.some((line) => line.msg === 'the LISTEN connection was lost: reconnecting')).toBe(true)
    expect(logs.some((line) => String(line.msg).startsWith('the LISTEN connection is back'))).toBe(true)
  })

  test('app.close() ends every listener: no connection left, no handler called, listen refused', async () => {
    const { app, applicationName } = await start()
    const late = collector()
    await app.db.listen('late', late.handler)
    expect(await db.countConnections(`${applicationName}/listen`)).toBe(1)
    await app.close()
    await waitUntil(
      async () => (await db.countConnections(`${applicationName}/listen`)) === 0,
      'the LISTEN connection gone',
    )
    await notify('late', 'after close')
    await sleep(100)
    expect(late.received).toEqual([])
    await expect(app.db.listen('late', late.handler)).rejects.toMatchObject({ code: 'FST_PG_POOL_CLOSED' })
  })

  test('a handler that throws or rejects is logged; the others still get the notification', async () => {
    const { app, logs } = await start()
    const good = collector()
    await app.db.listen('faulty', () => {
      throw new Error('handler bug')
    })
    await app.db.listen('faulty', async () => {
      throw new Error('async handler bug')
    })
    await app.db.listen('faulty', good.handler)
    await notify('faulty', 'x')
    await waitUntil(() => good.received.length === 1, 'the good handler')
    await waitUntil(
      () => logs.filter((line) => line.msg === 'a LISTEN handler failed').length === 2,
      'both failures logged',
    )
    expect(logs.find((line) => line.msg === 'a LISTEN handler failed')).toMatchObject({ channel: 'faulty' })
  })

  test('bad channels, PgBouncer transaction mode and an unreachable server are coded errors', async () => {
    const { app, applicationName } = await start()
    for (const channel of ['', 'x'.repeat(64), 42]) {
      await expect(app.db.listen(channel as string, () => {})).rejects.toMatchObject({
        code: 'FST_PG_POOL_INVALID_OPTION',
      })
    }
    await expect(app.db.listen('ok', 'not a function' as never)).rejects.toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
    })
    expect(await db.countConnections(`${applicationName}/listen`)).toBe(0)

    const bouncer = await coreApp(db.directUrl, { pgbouncer: true, lazy: true })
    apps.push(bouncer.app)
    await expect(bouncer.app.db.listen('ok', () => {})).rejects.toMatchObject({
      code: 'FST_PG_POOL_INVALID_OPTION',
      message: expect.stringContaining('pool.pgbouncer'),
    })

    const password = 'listen-secret-5c1e'
    const nowhere = await coreApp(`postgres://nobody:${password}@127.0.0.1:1/none`, {
      pgbouncer: false,
      lazy: true,
      connectTimeout: 500,
    })
    apps.push(nowhere.app)
    const error = await nowhere.app.db.listen('ok', () => {}).catch((e: unknown) => e as Error)
    expect(error).toMatchObject({ code: 'FST_PG_POOL_CONNECT_FAILED', statusCode: 503 })
    expect(String((error as Error).cause)).not.toContain(password)
    expect(nowhere.app.pgPool.listener()).toMatchObject({ listeners: 0, channels: 0, connected: false })
  })

  test('each named instance listens on its own database (app.dbs.<name>.listen)', async () => {
    const app = Fastify()
    apps.push(app)
    const name = uniqueName('named')
    await app.register(pgPoolCore, { connection: db.directUrl, pool: { pgbouncer: false, applicationName: name } })
    await app.register(pgPoolCore, {
      name: 'reporting',
      connection: other.directUrl,
      pool: { pgbouncer: false, applicationName: `${name}-reporting` },
    })
    const main = collector()
    const reporting = collector()
    await app.db.listen('reports', main.handler)
    await app.dbs.reporting.listen('reports', reporting.handler)
    await notify('reports', 'on main')
    await notify('reports', 'on reporting', other)
    await waitUntil(() => main.received.length === 1 && reporting.received.length === 1, 'one each')
    expect(main.received[0]?.payload).toBe('on main')
    expect(reporting.received[0]?.payload).toBe('on reporting')
    const views = new Map(app.pgPools.all().map((view: PgPoolView) => [view.name, view.listener().listeners]))
    expect(views).toEqual(
      new Map([
        ['primary', 1],
        ['reporting', 1],
      ]),
    )
    expect(await other.countConnections(`${name}-reporting/listen`)).toBe(1)
  })
})

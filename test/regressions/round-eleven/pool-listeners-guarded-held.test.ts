// Round eleven, second round (attacks on its fixes) (held): app.pgPool.on() listeners run guarded (view.ts). off() keeps
// EventEmitter's semantics, the suite's own observers keep working next to a throwing listener,
// the log line names the event and carries no secret, and listeners may close the app or query.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../../metrics/exposition.js'
import { coreApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

test('off(): same fn twice on one event and once on another, removed once from each', async () => {
  const { app } = await coreApp(db.url, { max: 1 })
  try {
    const calls: string[] = []
    const fn = (...args: unknown[]) => void calls.push(typeof args[1] === 'string' ? 'release' : 'acquire')
    app.pgPool
      .on('acquire', fn)
      .on('acquire', fn)
      .on('release', fn as never)
    app.pgPool.off('acquire', fn)
    app.pgPool.off('connect', fn) // never added to this event: nothing
    app.pgPool.off('leak', () => {}) // never added at all: nothing
    await app.db`select 1`
    await waitFor(() => calls.length >= 2)
    expect(calls.sort()).toEqual(['acquire', 'release'])
    calls.length = 0
    app.pgPool.off('acquire', fn).off('release', fn as never)
    await app.db`select 1`
    expect(calls).toEqual([])
    // One more off than on: nothing (no throw).
    app.pgPool.off('acquire', fn)
  } finally {
    await app.close()
  }
})

test('off() inside a listener while the event is emitted: the others of that emit still run, later emits skip it', async () => {
  const { app } = await coreApp(db.url, { max: 1 })
  try {
    const calls: string[] = []
    const second = () => void calls.push('second')
    const first = () => {
      calls.push('first')
      app.pgPool.off('acquire', second)
    }
    app.pgPool.on('acquire', first).on('acquire', second)
    await app.db`select 1`
    // As EventEmitter: the listeners of an emit are those registered when it began.
    expect(calls).toEqual(['first', 'second'])
    calls.length = 0
    await app.db`select 1`
    expect(calls).toEqual(['first'])
  } finally {
    await app.close()
  }
})

test('a throwing and a rejecting listener: metrics still count, the log says which event, no secret', async () => {
  const { app, logs } = await coreApp(db.url, { max: 2 })
  await app.register(pgPoolMetrics)
  app.get('/', async (request) => (await request.db`select 1 as one`)[0])
  app.get('/tx', { config: { db: { transaction: true } } }, async (request) => (await request.db`select 1 as one`)[0])
  const secret = 'sekrit-in-listener-payload'
  app.pgPool.on('acquire', () => {
    throw new Error('acquire listener bug')
  })
  app.pgPool.on('transaction', async () => {
    throw Object.assign(new Error('transaction listener bug'), { note: 'rejected' })
  })
  app.pgPool.on('release', () => {
    throw 'a string thrown' // not an Error
  })
  try {
    for (let i = 0; i < 3; i++) expect((await app.inject('/')).statusCode).toBe(200)
    for (let i = 0; i < 2; i++) expect((await app.inject('/tx')).statusCode).toBe(200)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    const m = parseExposition((await app.inject('/metrics')).body)
    expect(m.value('pg_pool_acquires_total', { result: 'ok' })).toBe(5)
    expect(m.value('pg_pool_transactions_total', { outcome: 'commit' })).toBe(2)
    const failures = logs.filter((line) => String(line.msg).includes('listener failed'))
    expect(failures.map((line) => [line.level, line.event]).sort()).toEqual(
      [
        ...Array(5).fill([50, 'acquire']),
        ...Array(5).fill([50, 'release']),
        ...Array(2).fill([50, 'transaction']),
      ].sort(),
    )
    expect(JSON.stringify(failures)).not.toContain(secret)
    if (db.password !== '') expect(JSON.stringify(failures)).not.toContain(db.password)
  } finally {
    await app.close()
  }
})

test('a connectError listener that rethrows: the logged line has no password', async () => {
  const password = 'pw-listener-9f3a'
  const logs: string[] = []
  const app = Fastify({
    logger: { level: 'debug', stream: { write: (line: string) => void logs.push(line) } },
  })
  await app.register(pgPoolCore, {
    connection: `postgres://nobody:${password}@127.0.0.1:1/nowhere`,
    pool: { lazy: true, connectTimeout: 500, acquireTimeout: 1_000 },
  })
  let rethrown = 0
  app.pgPool.on('connectError', (error) => {
    rethrown++
    throw error
  })
  app.get('/', async (request) => request.db`select 1`)
  try {
    const response = await app.inject('/')
    expect(response.statusCode).toBe(503)
    expect(rethrown).toBeGreaterThan(0)
    const failures = logs.filter((line) => line.includes('listener failed'))
    expect(failures.length).toBeGreaterThan(0)
    expect(logs.join('\n')).not.toContain(password)
  } finally {
    await app.close()
  }
})

test('listeners that query through app.db and one that closes the app', async () => {
  const { app } = await coreApp(db.url, { max: 1, closeTimeout: 2_000 })
  const seen: unknown[] = []
  let queried = false
  app.pgPool.on('release', (_ms, route) => {
    if (route !== '/' || queried) return
    queried = true
    // A query from inside the pool's release: it waits for (and gets) the very connection.
    void app.db`select 2 as two`.then((rows) => seen.push(rows[0]))
  })
  app.get('/', async (request) => (await request.db`select 1 as one`)[0])
  app.get('/close', async (request) => {
    app.pgPool.on('acquire', () => void app.close())
    return (await request.db`select 3 as three`)[0]
  })
  try {
    expect((await app.inject('/')).json()).toEqual({ one: 1 })
    expect(await waitFor(() => seen.length === 1)).toBe(true)
    expect(seen).toEqual([{ two: 2 }])
    const closing = await app.inject('/close')
    // The close runs after the request (Fastify drains); the request itself is answered.
    expect([200, 503]).toContain(closing.statusCode)
    expect(await waitFor(() => !app.pgPool.stats().accepting)).toBe(true)
    expect(await waitFor(() => app.pgPool.stats().open === 0, 5_000)).toBe(true)
  } finally {
    await app.close()
  }
})

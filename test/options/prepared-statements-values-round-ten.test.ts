// Round ten of hostile probing, the newest code: pool.maxPreparedStatements values and what counts toward
// it. Attacks that held, kept as regression tests.
import pgPoolCore from '@fastify-pg-pool/core'
import type { FastifyInstance } from 'fastify'
import Fastify from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, registerError } from '../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

let db: TestDatabase
const apps: FastifyInstance[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(() => db.drop())

const url = 'postgres://app:secret@127.0.0.1:1/app'

describe('maxPreparedStatements values (held)', () => {
  test('0, 1 and a huge integer are taken; negative, fractional, string, NaN, Infinity and null are refused by name', async () => {
    for (const value of [0, 1, 1e300]) {
      const app = Fastify()
      await app.register(pgPoolCore, { connection: url, pool: { lazy: true, maxPreparedStatements: value } })
      await app.ready()
      expect(app.pgPool.options.maxPreparedStatements).toBe(value)
      await app.close()
    }
    for (const value of [-1, 1.5, '5', Number.NaN, Number.POSITIVE_INFINITY, null]) {
      const error = await registerError((app) =>
        app.register(pgPoolCore, { connection: url, pool: { lazy: true, maxPreparedStatements: value as never } }),
      )
      expect([value, error.code, error.message.split(':')[0]]).toEqual([
        value,
        'FST_PG_POOL_INVALID_OPTION',
        'Invalid option pool.maxPreparedStatements',
      ])
    }
  })

  test("a replica entry's value is checked and named as the replica's", async () => {
    const error = await registerError((app) =>
      app.register(pgPoolCore, {
        connection: url,
        pool: { lazy: true },
        replicas: [url, { connection: url, pool: { maxPreparedStatements: -1 } }],
      }),
    )
    expect(error.message).toBe(
      'Invalid option replicas[1].pool.maxPreparedStatements: expected an integer >= 0, got -1',
    )
  })
})

describe('what retires a connection for statements (held)', () => {
  test('cap 0: 40 distinct texts on one connection, never retired', async () => {
    const { app } = await coreApp(db.directUrl, { max: 1, maxPreparedStatements: 0 })
    apps.push(app)
    const closes: string[] = []
    app.pgPool.on('close', (reason) => closes.push(reason))
    const pids = new Set<number>()
    for (let i = 0; i < 40; i++) {
      const [row] = await app.db<{ pid: number }[]>`select pg_backend_pid() as ${app.db(`pid${i}`)}`
      pids.add(Object.values(row as object)[0] as number)
    }
    expect({ pids: pids.size, closes }).toEqual({ pids: 1, closes: [] })
  })

  test('cap 1: statements that prepare nothing (unsafe, simple, connection.prepare false) never retire the connection', async () => {
    const { app } = await coreApp(db.directUrl, { max: 1, maxPreparedStatements: 1 })
    apps.push(app)
    const closes: string[] = []
    app.pgPool.on('close', (reason) => closes.push(reason))
    app.get('/u/:n', async (request) => {
      const n = Number((request.params as { n: string }).n)
      const [a] = await request.db.unsafe(`select pg_backend_pid() as pid, ${n} as n`)
      await request.db`select 1 as ${request.db(`s${n}`)}`.simple()
      return a
    })
    const pids = new Set<number>()
    for (let i = 0; i < 20; i++) {
      const res = await app.inject(`/u/${i}`)
      expect(res.statusCode).toBe(200)
      pids.add(res.json().pid)
    }
    expect({ pids: pids.size, closes }).toEqual({ pids: 1, closes: [] })

    const u = new URL(db.directUrl)
    const noPrepare = Fastify()
    apps.push(noPrepare)
    await noPrepare.register(pgPoolCore, {
      connection: {
        host: u.hostname,
        port: Number(u.port),
        database: u.pathname.slice(1),
        user: decodeURIComponent(u.username),
        ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
        prepare: false,
      },
      pool: { max: 1, maxPreparedStatements: 1, applicationName: uniqueName() },
    })
    const closed: string[] = []
    noPrepare.pgPool.on('close', (reason) => closed.push(reason))
    const seen = new Set<number>()
    for (let i = 0; i < 20; i++) {
      const [row] = await noPrepare.db<{ pid: number }[]>`select pg_backend_pid() as ${noPrepare.db(`p${i}`)}`
      seen.add(Object.values(row as object)[0] as number)
    }
    expect({ pids: seen.size, closed }).toEqual({ pids: 1, closed: [] })
  })
})

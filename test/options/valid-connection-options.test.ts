import { existsSync } from 'node:fs'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Hostile probing, round 2 (options): valid configurations real users have, after the new
// validation at register (7c87ec1), that held: each registers (not lazy) and answers a request.

let db: TestDatabase
let socketDir: string | undefined
let serverPort = 0
let apps: FastifyInstance[] = []

beforeAll(async () => {
  db = await createTestDatabase()
  const [row] = await db.sql<{ dirs: string; port: number }[]>`
    select current_setting('unix_socket_directories') as dirs, current_setting('port')::int as port`
  serverPort = row?.port ?? 0
  socketDir = (row?.dirs ?? '')
    .split(',')
    .map((dir) => dir.trim())
    .find((dir) => dir.startsWith('/') && existsSync(`${dir}/.s.PGSQL.${serverPort}`))
})
afterEach(async () => {
  await Promise.all(apps.map((app) => app.close().catch(() => {})))
  apps = []
})
afterAll(() => db.drop())

const parts = () => {
  const parsed = new URL(db.url)
  return {
    host: parsed.hostname,
    port: Number(parsed.port),
    database: parsed.pathname.slice(1),
    username: decodeURIComponent(parsed.username),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
  }
}
const withQuery = (query: string) => `${db.url}${db.url.includes('?') ? '&' : '?'}${query}`

async function answer(connection: unknown, sql = "select current_setting('search_path') as search_path, 1 as one_two") {
  const app = Fastify()
  apps.push(app)
  app.get('/q', async (request) => (await request.db.unsafe(sql))[0])
  const error = await app
    .register(pgPoolCore, { connection: connection as never, pool: { max: 1 } })
    .ready()
    .then(
      () => undefined,
      (e: Error & { code?: string }) => `${e.code}: ${e.message}`,
    )
  if (error !== undefined) return { error }
  const response = await app.inject('/q')
  return { status: response.statusCode, body: response.json() }
}

describe('valid connection options are not refused', () => {
  test('Unix socket: host a directory, and path', async (context) => {
    if (socketDir === undefined) context.skip()
    const { host: _host, port: _port, ...rest } = parts()
    expect(await answer({ ...rest, host: socketDir, port: serverPort })).toMatchObject({ status: 200 })
    expect(await answer({ ...rest, path: `${socketDir}/.s.PGSQL.${serverPort}` })).toMatchObject({ status: 200 })
  })

  test('postgres.js option keys: transform camel, types, onnotice, prepare false, connection.search_path, ports as strings', async () => {
    expect(await answer({ ...parts(), transform: postgres.camel })).toMatchObject({ status: 200, body: { oneTwo: 1 } })
    expect(await answer({ ...parts(), types: { bigint: postgres.BigInt }, onnotice: () => {} })).toMatchObject({
      status: 200,
    })
    expect(await answer({ ...parts(), prepare: false, fetch_types: false, keep_alive: 30 })).toMatchObject({
      status: 200,
    })
    expect(await answer({ ...parts(), connection: { search_path: 'pg_catalog' } })).toMatchObject({
      status: 200,
      body: { search_path: 'pg_catalog' },
    })
    expect(await answer({ ...parts(), port: String(parts().port) })).toMatchObject({ status: 200 })
    const { host, port, ...rest } = parts()
    expect(await answer({ ...rest, host: [host], port: [String(port)] })).toMatchObject({ status: 200 })
    expect(await answer({ ...parts(), ssl: false, sslnegotiation: null })).toMatchObject({ status: 200 })
    // `max` here and pool.max too: one would be ignored (test/regressions/connection-option-types).
    expect(await answer({ ...parts(), max: 2 })).toMatchObject({
      error: expect.stringContaining('connection.max: and pool.max are both given'),
    })
  })

  test('URL query parameters people use: sslmode=disable/prefer, options=-c, connect_timeout, application_name, target_session_attrs', async () => {
    for (const query of [
      'sslmode=disable',
      'sslmode=prefer',
      'connect_timeout=10',
      'application_name=probe-app',
      'target_session_attrs=read-write',
      'target_session_attrs=primary',
    ]) {
      expect(await answer(withQuery(query)), query).toMatchObject({ status: 200 })
    }
    expect(await answer(withQuery('options=-c%20search_path%3Dpg_catalog'))).toMatchObject({
      status: 200,
      body: { search_path: 'pg_catalog' },
    })
  })

  test('postgresql:// scheme, upper-case scheme, no port, a host list with a refused host first', async () => {
    expect(await answer(db.url.replace(/^postgres:/, 'postgresql:'))).toMatchObject({ status: 200 })
    expect(await answer(db.url.replace(/^postgres:/, 'POSTGRES:'))).toMatchObject({ status: 200 })
    const parsed = new URL(db.url)
    const list = `${parsed.protocol}//${parsed.username}${parsed.password ? `:${parsed.password}` : ''}@127.0.0.1:1,${parsed.host}${parsed.pathname}`
    expect(await answer(list)).toMatchObject({ status: 200 })
  })

  test('the PG* variables only', async () => {
    const keys = ['DATABASE_URL', 'PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGPASSWORD'] as const
    const saved = Object.fromEntries(keys.map((key) => [key, process.env[key]]))
    try {
      const { host, port, database, username, password } = parts()
      delete process.env.DATABASE_URL
      Object.assign(process.env, { PGHOST: host, PGPORT: String(port), PGDATABASE: database, PGUSER: username })
      if (password !== undefined) process.env.PGPASSWORD = password
      expect(await answer(undefined)).toMatchObject({ status: 200 })
    } finally {
      for (const key of keys) {
        if (saved[key] === undefined) delete process.env[key]
        else process.env[key] = saved[key]
      }
    }
  })
})

describe('refusals and what they quote', () => {
  test('an http URL is named as not postgres://, without its userinfo password', async () => {
    const pw = 'Pw-userinfo-9f3a'
    const result = await answer(`https://app:${pw}@db.internal/app`)
    expect(result.error).toMatch(/^FST_PG_POOL_INVALID_OPTION: .*postgres:\/\//)
    expect(result.error).not.toContain(pw)
  })

  test('a query-string password (libpq style) in a postgres URL reaches no log line or body', async () => {
    const pw = 'Pw-query-7c1e'
    const lines: string[] = []
    const app = Fastify({
      logger: {
        level: 'trace',
        stream: {
          write: (line: string) => {
            lines.push(line)
          },
        },
      },
    })
    apps.push(app)
    await app.register(pgPoolCore, {
      connection: `postgres://127.0.0.1:1/app?user=app&password=${pw}`,
      pool: { lazy: true, connectTimeout: 500, acquireTimeout: 1_000 },
    })
    app.get('/q', async (request) => request.db`select 1`)
    const response = await app.inject('/q')
    expect(response.json().code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect(response.body).not.toContain(pw)
    expect(lines.join('\n')).not.toContain(pw)
  })
})

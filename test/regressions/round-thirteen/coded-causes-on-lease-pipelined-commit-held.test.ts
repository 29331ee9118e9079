// HELD (attack-paths): round thirteen's withCause (a PostgreSQL cause logged as its condition, the
// server's message withheld) reaches the paths the round's own test left out: a function raising
// with a parameter in its text from onLease (08006 -> CONNECTION_LOST, 57014, P0001, 40001), from
// a pipelined route (shared connection), and a deferred constraint trigger quoting a value at
// COMMIT (COMMIT_FAILED) of a route transaction and of a begin() block: no log line holds it.
import { Writable } from 'node:stream'
import pgPoolCore, { type PgPoolCoreOptions } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
let app: FastifyInstance | undefined
const SECRET = 'bob.attack-paths@example.com'

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`
    create function find_tenant(state text, wanted text) returns void language plpgsql as
      $f$ begin raise exception 'no tenant %', wanted using errcode = state; end $f$;
    create table deferred_check (who text);
    create function refuse_who() returns trigger language plpgsql as
      $f$ begin raise exception 'refused %', new.who using errcode = '23514'; end $f$;
    create constraint trigger refuse after insert on deferred_check deferrable initially deferred
      for each row execute function refuse_who();
  `)
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(() => db?.drop())

async function loggingApp(extra: Omit<PgPoolCoreOptions, 'connection'> = {}) {
  const logs: string[] = []
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      logs.push(String(chunk))
      callback()
    },
  })
  const server = Fastify({ logger: { level: 'trace', stream } })
  app = server
  await server.register(pgPoolCore, { connection: db.url, pool: { max: 2 }, ...extra })
  return { server, logs }
}

describe('coded errors with a PostgreSQL cause: the server message stays out of the log', () => {
  for (const [state, code] of [
    ['08006', 'FST_PG_POOL_CONNECTION_LOST'],
    ['57014', '57014'],
    ['P0001', 'P0001'],
    ['40001', '40001'],
  ] as const) {
    test(`onLease raising ${state}`, async () => {
      const { server, logs } = await loggingApp({
        onLease: async (_request, sql) => {
          await sql`select find_tenant(${state}, ${SECRET})`
        },
      })
      server.get('/x', async (request) => request.db`select 1 as one`)
      const response = await server.inject('/x')
      expect(response.json().code).toBe(code)
      expect(logs.some((line) => line.includes(`"code":"${code}"`))).toBe(true)
      expect(logs.join('\n')).not.toContain(SECRET)
    })

    test(`pipelined route raising ${state}`, async () => {
      const { server, logs } = await loggingApp()
      server.get(
        '/p',
        { config: { db: { pipeline: true } } },
        async (request) => request.db`select find_tenant(${state}, ${SECRET})`,
      )
      const response = await server.inject('/p')
      expect(response.json().code).toBe(code)
      expect(logs.join('\n')).not.toContain(SECRET)
    })
  }

  test('a deferred trigger quoting a value at COMMIT: route transaction and begin()', async () => {
    const { server, logs } = await loggingApp()
    server.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
      await request.db`insert into deferred_check values (${SECRET})`
      return { ok: true }
    })
    server.post('/begin', async (request) => {
      await request.db.begin((sql) => sql`insert into deferred_check values (${SECRET})`)
      return { ok: true }
    })
    for (const url of ['/tx', '/begin']) {
      const response = await server.inject({ method: 'POST', url })
      expect(response.json().code, url).toBe('FST_PG_POOL_COMMIT_FAILED')
      expect(response.body).not.toContain(SECRET)
    }
    expect(logs.filter((line) => line.includes('FST_PG_POOL_COMMIT_FAILED')).length).toBeGreaterThan(0)
    expect(logs.join('\n')).not.toContain(SECRET)
  })
})

// HELD (probe-decoding): settings that change how postgres.js reads or writes values
// (DateStyle, IntervalStyle, TimeZone, bytea_output, extra_float_digits, client_encoding,
// standard_conforming_strings, search_path onto a shadowing table), set by one holder on route
// kinds and paths request-settings-held does not cover (a `request.db.begin()` block, a
// pipelined route, `app.db` itself, `app.db.lease()`, `app.db.transaction()`), never change the
// VALUES the next request reads or writes on the same connection (max: 1): dates, timestamps,
// intervals, bytes, floats, non-ASCII text, backslashes, a Date parameter bound to `timestamp`,
// and an unqualified table, read on an exclusive route and through `app.db`. And a pipelined
// readOnly route, which the primary serves alone, gets the reset that pipelined requests (which
// share sessions by contract) owed, and puts the read-only default back for the next.
import type { LeaseDb } from '@fastify-pg-pool/core'
import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
let current: TestApp | undefined

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create schema shadow;
    create table public.things (id int primary key, name text);
    create table shadow.things (id int primary key, name text);
    insert into public.things values (1, 'public');
    insert into shadow.things values (1, 'shadow')`)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop()
})

const sets = [
  "set DateStyle = 'SQL, DMY'",
  "set IntervalStyle = 'sql_standard'",
  "set TimeZone = 'Pacific/Chatham'",
  'set bytea_output = escape',
  'set extra_float_digits = -15',
  "set client_encoding = 'LATIN1'",
  'set standard_conforming_strings = off',
  'set search_path = shadow, public',
].join('; ')

// Read in one simple-protocol message (text results), and as a prepared statement with a Date.
const readText = `select pg_catalog.pg_backend_pid() as pid,
  '2026-07-12 10:30:00+00'::timestamptz::text as tstext, '2026-03-04'::date as d,
  '2026-03-04 05:06:07'::timestamp as ts, '1 day 02:03:04'::interval as i,
  '\\xdeadbeef'::bytea as b, 0.1::float8 as f, 'café ÿ' as t, 'a\\b' as s,
  (select name from things where id = 1) as shadowed`

const at = new Date('2026-07-12T10:30:00.000Z')

interface Seen {
  pid: number
  [key: string]: unknown
}

async function readOn(app: FastifyInstance, via: 'request' | 'app.db'): Promise<Seen> {
  const response = await app.inject(via === 'request' ? '/read' : '/read-app')
  expect(response.statusCode).toBe(200)
  return response.json() as Seen
}

// What the changer itself reads after its SETs: they did take effect for it.
const inSession =
  "select pg_catalog.current_setting('DateStyle') as ds, pg_catalog.current_setting('client_encoding') as enc"
// Every handle (request.db, a begin() block's, a lease, app.db) runs unsafe() alike.
type Handle = Pick<LeaseDb, 'unsafe'>
const inside = async (sql: Handle) => (await sql.unsafe(inSession))[0]

function routes(app: FastifyInstance): void {
  const read = async (sql: Handle) => {
    const [text] = await sql.unsafe(readText)
    // Parameters (extended protocol, a prepared statement): a Date, bytes, non-ASCII text, a float.
    const [bound] = await sql.unsafe(
      'select $1::timestamp::text as bound, $2::bytea as bytes, $3::text as param, $4::float8 as float',
      [at, Buffer.from([0xde, 0xad]), 'café', 0.1],
    )
    return {
      ...text,
      ...bound,
      b: Buffer.from(text?.b as Uint8Array).toString('hex'),
      bytes: Buffer.from(bound?.bytes as Uint8Array).toString('hex'),
    }
  }
  app.get('/read', async (request) => read(request.db))
  app.get('/read-app', async () => read(app.db))
  let seen: unknown
  app.post('/begin', async (request) => {
    await request.db.begin(async (tx) => {
      await tx.unsafe(sets)
      seen = await inside(tx)
    })
    return seen
  })
  app.post('/pipelined', { config: { db: { pipeline: true } } }, async (request) => {
    for (const set of sets.split('; ')) await request.db.unsafe(set)
    return inside(request.db)
  })
  app.post('/lease', async () => {
    const lease = await app.db.lease()
    try {
      await lease.unsafe(sets)
      return await inside(lease)
    } finally {
      await lease.release()
    }
  })
  app.post('/transaction', async () => {
    await app.db.transaction(async (sql) => {
      await sql.unsafe(sets)
      seen = await inside(sql)
    })
    return seen
  })
  app.post('/app-db', async () => {
    const results = (await app.db.unsafe(`${sets}; ${inSession}`)) as unknown as unknown[][]
    return results.at(-1)?.[0]
  })
}

describe('one holder sets decoding settings; the next reads the same values (max: 1)', () => {
  for (const changer of ['/begin', '/pipelined', '/lease', '/transaction', '/app-db']) {
    for (const via of ['request', 'app.db'] as const) {
      test(`${changer}, then read through ${via}`, async () => {
        current = await coreApp(db.url, { max: 1 })
        const { app } = current
        routes(app)
        const before = await readOn(app, via)
        expect(before).toMatchObject({
          shadowed: 'public',
          t: 'café ÿ',
          s: 'a\\b',
          b: 'deadbeef',
          f: 0.1,
          param: 'café',
          bytes: 'dead',
          float: 0.1,
          bound: '2026-07-12 10:30:00',
        })
        const changed = await app.inject({ method: 'POST', url: changer })
        expect(changed.statusCode).toBe(200)
        expect(changed.json()).toEqual({ ds: 'SQL, DMY', enc: 'LATIN1' })
        const after = await readOn(app, via)
        // The same connection (max: 1), reset, not retired.
        expect(after.pid).toBe(before.pid)
        expect(after).toEqual(before)
      })
    }
  }
})

test('a pipelined readOnly route served alone by the primary gets the reset the pipelined requests owed', async () => {
  await db.sql`create table if not exists writes (id serial primary key)`
  current = await coreApp(db.url, { max: 1 })
  const { app } = current
  const state = `select pg_catalog.pg_backend_pid() as pid, pg_catalog.current_setting('default_transaction_read_only') as ro,
    '2026-03-04'::date as d`
  app.post('/set', { config: { db: { pipeline: true } } }, async (request) => {
    await request.db.unsafe(sets)
    return (await request.db.unsafe(state))[0]
  })
  app.get('/ro', { config: { db: { pipeline: true, readOnly: true } } }, async (request) => {
    return (await request.db.unsafe(state))[0]
  })
  app.post('/write', { config: { db: { pipeline: true } } }, async (request) => {
    await request.db`insert into writes default values`
    return (await request.db.unsafe(state))[0]
  })
  const set = (await app.inject({ method: 'POST', url: '/set' })).json()
  // The pipelined request itself read its own DateStyle: 4 March as 3 April.
  expect(set).toMatchObject({ d: '2026-04-03T00:00:00.000Z' })
  const ro = (await app.inject('/ro')).json()
  expect(ro).toEqual({ pid: set.pid, ro: 'on', d: '2026-03-04T00:00:00.000Z' })
  const write = await app.inject({ method: 'POST', url: '/write' })
  expect(write.statusCode).toBe(200)
  expect(write.json()).toEqual({ pid: set.pid, ro: 'off', d: '2026-03-04T00:00:00.000Z' })
})

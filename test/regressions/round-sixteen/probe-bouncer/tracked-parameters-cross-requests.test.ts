// Round sixteen (probe-bouncer): behind PgBouncer in transaction mode, set up as
// docs/pgbouncer-and-sizing.md advises (`server_reset_query_always = 1`, a DISCARD ALL after every
// transaction), one request's `SET TimeZone`, `SET DateStyle`, `SET client_encoding` or
// `SET application_name` reached every later request served on the same pool connection: PgBouncer
// keeps those five parameters (and standard_conforming_strings) per CLIENT connection and sets them
// again on whichever server connection it gives that client next, after its DISCARD ALL. The pool
// sends no reset behind PgBouncer, so its connection carried them on. What the user saw: the next
// request answered 200 with its timestamps as `null` (postgres.js cannot read German dates), and
// its insert of 'café' stored 'cafÃ©' (its UTF-8 bytes read as LATIN1): silent wrong data in
// a request that set nothing. The pool now retires a connection on which a holder changed one of
// the parameters PgBouncer replays (a new client connection starts from its startup values).
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../../support/app.js'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'
import { type PgBouncer, startPgBouncer } from '../../../support/pgbouncer.js'

interface Seen {
  timezone: string
  datestyle: string
  encoding: string
  app: string
  validNow: boolean
}

let db: TestDatabase
let bouncer: PgBouncer
let current: TestApp
let clean: Seen
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table note (body text not null)`
  // One server connection and one pool connection: the next request gets both again.
  bouncer = await startPgBouncer({
    upstream: db.directUrl,
    defaultPoolSize: 1,
    settings: { server_reset_query_always: 1 },
  })
  current = await coreApp(bouncer.via(db.directUrl), { max: 1, pgbouncer: true })
  current.app.post('/set', async (request) => {
    await request.db.unsafe((request.body as { statement: string }).statement)
    return { ok: true }
  })
  current.app.get('/show', async (request): Promise<Seen> => {
    const [row] = await request.db<(Omit<Seen, 'validNow'> & { now: unknown })[]>`
      select current_setting('TimeZone') as timezone, current_setting('DateStyle') as datestyle,
        current_setting('client_encoding') as encoding, current_setting('application_name') as app, now() as now`
    const { now, ...settings } = row as Omit<Seen, 'validNow'> & { now: unknown }
    return { ...settings, validNow: now instanceof Date && !Number.isNaN(now.getTime()) }
  })
  current.app.post('/note', async (request) => {
    await request.db`insert into note values (${(request.body as { body: string }).body})`
    return { ok: true }
  })
  await current.app.ready()
  clean = (await current.app.inject('/show')).json()
})
afterAll(async () => {
  await current?.app.close()
  await bouncer?.stop()
  await db?.drop()
})

/** PgBouncer's client connections of this database (the pool's connections). */
async function clientPorts(): Promise<number[]> {
  const database = new URL(db.directUrl).pathname.slice(1)
  return (await bouncer.admin('SHOW CLIENTS'))
    .filter((row) => row.database === database)
    .map((row) => Number(row.port))
    .sort((a, b) => a - b)
}

describe('PgBouncer transaction mode, server_reset_query_always = 1', () => {
  test('requests that set nothing keep their pool connection', async () => {
    const before = await clientPorts()
    for (let i = 0; i < 3; i++) expect((await current.app.inject('/show')).json()).toEqual(clean)
    expect(await clientPorts()).toEqual(before)
  })

  test('a SET LOCAL in a transaction the request committed keeps the pool connection', async () => {
    const before = await clientPorts()
    const set = await current.app.inject({
      method: 'POST',
      url: '/set',
      payload: { statement: "begin; set local timezone = 'Asia/Tokyo'; set local datestyle = 'German'; commit" },
    })
    expect(set.statusCode, set.body).toBe(200)
    expect((await current.app.inject('/show')).json()).toEqual(clean)
    expect(await clientPorts()).toEqual(before)
  })

  test('an app with other startup values on the same server connection: both keep their pool connections', async () => {
    // PgBouncer sets each client's values on the server connection it hands over (as another
    // spelling than the client gave): none of that may read as a request's change.
    const url = new URL(bouncer.via(db.directUrl))
    url.searchParams.set('DateStyle', 'iso, dmy')
    url.searchParams.set('TimeZone', 'utc')
    const other = Fastify()
    try {
      await other.register(pgPoolCore, { connection: url.toString(), pool: { max: 1, pgbouncer: true } })
      other.get('/show', async (request) => {
        const [row] = await request.db<{ datestyle: string }[]>`select current_setting('DateStyle') as datestyle`
        return row
      })
      await other.ready()
      expect((await other.inject('/show')).json()).toEqual({ datestyle: 'ISO, DMY' })
      const before = await clientPorts()
      for (let i = 0; i < 3; i++) {
        expect((await current.app.inject('/show')).json()).toEqual(clean)
        expect((await other.inject('/show')).json()).toEqual({ datestyle: 'ISO, DMY' })
      }
      expect(await clientPorts()).toEqual(before)
    } finally {
      await other.close()
    }
  })

  test.each([
    ["set timezone = 'Asia/Tokyo'", 'timezone'],
    ["set datestyle = 'German'", 'datestyle'],
    ["set client_encoding = 'LATIN1'", 'encoding'],
    ["set application_name = 'someone else'", 'app'],
  ])('a request that ran `%s` leaves the next request its own %s', async (statement) => {
    const set = await current.app.inject({ method: 'POST', url: '/set', payload: { statement } })
    expect(set.statusCode, set.body).toBe(200)
    const next = await current.app.inject('/show')
    expect(next.statusCode, next.body).toBe(200)
    expect(next.json(), "the next request runs with the last request's setting").toEqual(clean)
  })

  test("the next request's text is stored as it sent it", async () => {
    await db.sql`truncate note`
    const set = await current.app.inject({
      method: 'POST',
      url: '/set',
      payload: { statement: "set client_encoding = 'LATIN1'" },
    })
    expect(set.statusCode, set.body).toBe(200)
    const note = await current.app.inject({ method: 'POST', url: '/note', payload: { body: 'café' } })
    expect(note.statusCode, note.body).toBe(200)
    expect((await db.sql<{ body: string }[]>`select body from note`).map((row) => row.body)).toEqual(['café'])
  })
})

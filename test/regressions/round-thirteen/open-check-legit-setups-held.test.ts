// HELD (third-b): round thirteen's second-round open check (OPEN_SQL read raw, `seedable` from
// has_function_privilege, checkSettings() again after onConnect, DateStyle ISO only) and the
// connection-object fixes (a URL object read as its href, Map/Set refused) refuse no correct
// setup: an ordinary (non-superuser) login with default privileges, whose role has
// `extra_float_digits = 0` and `bytea_output = 'escape'` as defaults (the pool's startup
// parameters win) or `extra_float_digits = 3`, is served on one reused backend with random()
// reseeded after a request's setseed(); an onConnect setting extra_float_digits = 2 or
// DateStyle = 'ISO, YMD' is served and reads right; a `postgresql:` URL object (and a URL
// subclass) connects to the database it names, and one whose password (set through .password)
// holds @ : / # ? & = and a quote logs in; a frozen null-prototype options object and a
// class instance whose password is a prototype getter connect.

import { randomBytes } from 'node:crypto'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, urlAs } from '../../support/database.js'

let db: TestDatabase
let dbName: string
const apps: FastifyInstance[] = []
const roles = ['zero', 'three'].map((kind) => `fpp_${kind}_${randomBytes(3).toString('hex')}`)
const [zeroRole = '', threeRole = ''] = roles
let seeded: number

beforeAll(async () => {
  db = await createTestDatabase()
  dbName = new URL(db.directUrl).pathname.slice(1)
  for (const role of roles) {
    await db.admin.unsafe(`create role ${role} login password 'pw-${role}'`)
    await db.sql.unsafe(`grant all on database ${dbName} to ${role}`)
  }
  await db.admin.unsafe(`alter role ${zeroRole} set extra_float_digits = 0`)
  await db.admin.unsafe(`alter role ${zeroRole} set bytea_output = 'escape'`)
  await db.admin.unsafe(`alter role ${threeRole} set extra_float_digits = 3`)
  await db.sql.begin(async (sql) => {
    await sql`select setseed(0.5)`
    const [row] = await sql<{ r: number }[]>`select random() as r`
    seeded = Number(row?.r)
  })
})
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close()
})
afterAll(() => db?.drop(roles))

const read = `select '2026-03-04'::date as d, '\\xdeadbeef'::bytea as b, 0.1::float8 + 0.2::float8 as f`
const truth = { d: '2026-03-04T00:00:00.000Z', b: 'deadbeef', f: 0.30000000000000004 }

async function app(connection: unknown, onConnect?: string): Promise<FastifyInstance> {
  const instance = Fastify()
  apps.push(instance)
  await instance.register(pgPoolCore, {
    connection: connection as never,
    pool: { max: 1 },
    ...(onConnect === undefined
      ? {}
      : {
          onConnect: async (sql) => {
            await sql.unsafe(onConnect)
          },
        }),
  })
  instance.get('/read', async (request) => {
    const [row] = await request.db.unsafe(read)
    return { ...row, b: Buffer.from(row?.b as Uint8Array).toString('hex') }
  })
  instance.get('/who', async (request) => {
    const [row] = await request.db.unsafe(
      'select current_database() as db, current_user as usr, pg_backend_pid() as pid, random() as r',
    )
    return row
  })
  instance.post('/seed', async (request) => {
    await request.db.unsafe('select setseed(0.5)')
    return {}
  })
  await instance.ready()
  return instance
}

describe('the open check accepts correct setups', () => {
  for (const [kind, role] of [
    ['extra_float_digits = 0 and bytea_output = escape as role defaults', zeroRole],
    ['extra_float_digits = 3 as role default', threeRole],
  ] as const) {
    test(`a non-superuser login, ${kind}: served, one backend, random() reseeded`, async () => {
      const instance = await app(urlAs(db.directUrl, role, `pw-${role}`))
      expect((await instance.inject('/read')).json()).toEqual(truth)
      expect((await instance.inject({ method: 'POST', url: '/seed' })).statusCode).toBe(200)
      const first = (await instance.inject('/who')).json()
      const second = (await instance.inject('/who')).json()
      expect(first.usr).toBe(role)
      expect(second.pid).toBe(first.pid)
      expect(Number(first.r)).not.toBe(seeded)
    })
  }

  for (const setting of ['set extra_float_digits = 2', "set DateStyle = 'ISO, YMD'", "set DateStyle = 'iso, dmy'"]) {
    test(`onConnect ${setting}: served, read right`, async () => {
      const instance = await app(db.directUrl, setting)
      await instance.inject('/read')
      expect((await instance.inject('/read')).json()).toEqual(truth)
    })
  }

  test('a postgresql: URL object, and a URL subclass, connect to the database they name', async () => {
    const url = new URL(db.directUrl)
    url.protocol = 'postgresql:'
    expect(url.href.startsWith('postgresql://')).toBe(true)
    const first = await app(url)
    expect((await first.inject('/who')).json().db).toBe(dbName)
    class DbUrl extends URL {}
    const second = await app(new DbUrl(db.directUrl))
    expect((await second.inject('/who')).json().db).toBe(dbName)
  })

  test('a URL object whose password holds URL delimiters (set through .password) logs in', async () => {
    const role = zeroRole
    const secret = "p@ss:w/rd#?&=x'"
    await db.admin.unsafe(`alter role ${role} password '${secret.replace(/'/g, "''")}'`)
    try {
      const url = new URL(db.directUrl)
      url.username = role
      url.password = secret
      const instance = await app(url)
      expect((await instance.inject('/who')).json()).toMatchObject({ db: dbName, usr: role })
    } finally {
      await db.admin.unsafe(`alter role ${role} password 'pw-${role}'`)
    }
  })

  test('a frozen null-prototype object, and a class instance with a prototype getter, connect', async () => {
    const parsed = new URL(db.directUrl)
    const fields = {
      host: parsed.hostname,
      port: Number(parsed.port),
      database: dbName,
      username: decodeURIComponent(parsed.username),
    }
    const password = decodeURIComponent(parsed.password)
    const bare = Object.freeze(Object.assign(Object.create(null), fields, password === '' ? {} : { password }))
    expect((await (await app(bare)).inject('/who')).json().db).toBe(dbName)
    class Config {
      host = fields.host
      port = fields.port
      database = fields.database
      username = fields.username
      get password(): string | undefined {
        return password === '' ? undefined : password
      }
    }
    expect((await (await app(new Config())).inject('/who')).json().db).toBe(dbName)
  })
})

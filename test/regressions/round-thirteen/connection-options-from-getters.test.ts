// DEFECT (probe-options, high). What the user does: gives `connection` as postgres.js options that
// are an object whose values are getters on its prototype: an instance of a config class
// (`class DbConfig { get host() { return env.DB_HOST } get password() { ... } }`, the shape
// NestJS-style and typed config libraries hand out), or any object with inherited properties.
// postgres.js itself reads such an object fine (property access). What they see: register
// accepts it and the pool connects somewhere else: every own-property copy (`{ max, password,
// ...rest } = given` in resolveConnection) drops the inherited host, port, user, password and
// database, so postgres.js falls back on localhost:5432, the OS user and its database
// (`app.pgPool.target` says `localhost:5432/`); where a server answers there (a developer machine,
// a sidecar, this test machine) requests get 200 with another database's data. What they should
// see: the values the object gives, read by property access as postgres.js does (the target the
// user named), or FST_PG_POOL_INVALID_OPTION naming `connection` (expected a plain object). Cause:
// packages/core/src/options.ts resolveConnection: `checkKeys` (Object.keys, own only), then
// `const { max, password: givenPassword, pass, ...rest } = given` (object rest copies own
// enumerable properties only); checkConnectionValues reads `given[key]` (inherited too), so the
// values are validated but not used. Suggested fix: read each known postgres.js key by property
// access into a fresh object (for (const key of postgresOptionKeys) if (given[key] !== undefined)
// out[key] = given[key]), or refuse a connection object whose prototype is not Object.prototype
// or null. The same holds for a replica given so (`replicas: [new ReplicaConfig()]`, or an entry's
// `connection`): the replica's pool targets localhost:5432, where reads may meet the primary itself
// or another server.
// Round thirteen: failed on a718e61 (the code before its fix, both servers); passes after it.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db?.drop())

test('connection options from a config class (getters) connect where they say', async () => {
  const parsed = new URL(db.url)
  class DbConfig {
    get host() {
      return parsed.hostname
    }
    get port() {
      return Number(parsed.port || 5432)
    }
    get user() {
      return decodeURIComponent(parsed.username)
    }
    get password() {
      return decodeURIComponent(parsed.password) || undefined
    }
    get database() {
      return parsed.pathname.slice(1)
    }
  }
  const expected = `${parsed.hostname}:${parsed.port || 5432}/${parsed.pathname.slice(1)}`
  const app = Fastify()
  try {
    const registered = await app
      .register(pgPoolCore, { connection: new DbConfig() as never, pool: { lazy: true, connectTimeout: 3_000 } })
      .then(
        () => true,
        (error: unknown) => error,
      )
    // Refused, naming connection: acceptable.
    if (registered !== true) return expect(registered).toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
    app.get('/', async (request) => (await request.db`select current_database() as database`)[0])
    await app.ready()
    // Fails: 'localhost:5432/'.
    expect(app.pgPool.target).toBe(expected)
    const response = await app.inject('/')
    expect({ status: response.statusCode, body: response.json() }).toEqual({
      status: 200,
      body: { database: parsed.pathname.slice(1) },
    })
  } finally {
    await app.close()
  }
})

test('the same with the values inherited from a prototype object', async () => {
  const parsed = new URL(db.url)
  const password = decodeURIComponent(parsed.password)
  const defaults = {
    host: parsed.hostname,
    port: Number(parsed.port || 5432),
    user: decodeURIComponent(parsed.username),
    ...(password === '' ? {} : { password }),
  }
  // Shared defaults, each database's own object over them.
  const connection = Object.assign(Object.create(defaults) as object, { database: parsed.pathname.slice(1) })
  const app = Fastify()
  try {
    const registered = await app
      .register(pgPoolCore, { connection: connection as never, pool: { lazy: true, connectTimeout: 3_000 } })
      .then(
        () => true,
        (error: unknown) => error,
      )
    if (registered !== true) return expect(registered).toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
    await app.ready()
    expect(app.pgPool.target).toBe(`${parsed.hostname}:${parsed.port || 5432}/${parsed.pathname.slice(1)}`)
  } finally {
    await app.close()
  }
})

test('a replica given as a config class targets what it says, not localhost', async () => {
  const parsed = new URL(db.directUrl)
  class ReplicaConfig {
    get host() {
      return parsed.hostname
    }
    get port() {
      return Number(parsed.port || 5432)
    }
    get database() {
      return parsed.pathname.slice(1)
    }
  }
  const app = Fastify()
  try {
    const registered = await app
      .register(pgPoolCore, {
        connection: db.url,
        pool: { lazy: true },
        replicas: [new ReplicaConfig() as never],
        replica: { lagInterval: 60_000 },
      })
      .then(
        () => true,
        (error: unknown) => error,
      )
    if (registered !== true) return expect(registered).toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION' })
    // Fails: 'localhost:5432/'.
    expect(app.pgPools.all()[1]?.target).toBe(`${parsed.hostname}:${parsed.port || 5432}/${parsed.pathname.slice(1)}`)
  } finally {
    await app.close()
  }
})

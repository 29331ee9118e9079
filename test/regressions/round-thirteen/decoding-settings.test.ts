import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../../support/database.js'

// DEFECT (probe-decoding, round thirteen): settings postgres.js's parsers depend on.
//
// What the user does: nothing in the app. A DBA changes the database's defaults while it runs
// (`ALTER DATABASE app SET DateStyle = 'SQL, DMY'`, `bytea_output = 'escape'`,
// `extra_float_digits = -15`), and the pool's connections are replaced (here: terminated). Or the
// connection URL or `connection.connection` carries one of them, or `client_encoding=LATIN1`.
// What they saw: every request on the new connections read other values than the database holds,
// with no error (2026-03-04 as 2026-04-03, the bytea \xdeadbeef as one byte, 0.30000000000000004 as
// 0.3), and with LATIN1 every non-ASCII parameter was stored as other text ('café' as 'cafÃ©').
// What they should see: the database's values; settings given to the pool that would make
// postgres.js misread are refused at register (FST_PG_POOL_INVALID_OPTION); bytea_output and
// extra_float_digits are the pool's own startup parameters (they win over database and role
// defaults); a server whose DateStyle is not ISO is refused loudly (its input order cannot be kept
// by a startup parameter, so the pool does not set it: like PgJDBC, it refuses the connection).
// Failed on eca96c7: the first test read other values, the URL and connection forms registered
// and misread or miswrote.

let db: TestDatabase
let current: TestApp | undefined
const apps: FastifyInstance[] = []
let name: string

beforeAll(async () => {
  db = await createTestDatabase()
  name = new URL(db.directUrl).pathname.slice(1)
  await db.sql`create table notes (id int primary key, body text)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
  for (const app of apps.splice(0)) await app.close()
  await db.sql.unsafe(`alter database ${name} reset all`)
})
afterAll(() => db?.drop())

const read = `select '2026-03-04'::date as d, '2026-03-04 05:06:07+00'::timestamptz as ts,
  '\\xdeadbeef'::bytea as b, 0.1::float8 + 0.2::float8 as f`
const truth = { d: '2026-03-04T00:00:00.000Z', ts: '2026-03-04T05:06:07.000Z', b: 'deadbeef', f: 0.30000000000000004 }

function withRead(app: FastifyInstance): FastifyInstance {
  app.get('/read', async (request) => {
    const [row] = await request.db.unsafe(read)
    return { ...row, b: Buffer.from(row?.b as Uint8Array).toString('hex') }
  })
  return app
}

/** db.url as postgres.js options, with startup parameters of the test's own. */
function object(connection: Record<string, unknown>): Record<string, unknown> {
  const parsed = new URL(db.url)
  return {
    host: parsed.hostname,
    port: Number(parsed.port),
    database: parsed.pathname.slice(1),
    username: decodeURIComponent(parsed.username),
    ...(parsed.password === '' ? {} : { password: decodeURIComponent(parsed.password) }),
    connection,
  }
}

async function register(connection: unknown, lazy = false): Promise<FastifyInstance> {
  const app = Fastify()
  apps.push(app)
  await app.register(pgPoolCore, { connection: connection as string, pool: { max: 1, lazy } })
  return withRead(app)
}

async function refused(connection: unknown): Promise<{ code?: string; message: string }> {
  const error = await register(connection).then(
    () => new Error('registered'),
    (e: Error) => e,
  )
  return error as Error & { code?: string }
}

async function replaceConnections(): Promise<void> {
  await db.terminate(current?.applicationName as string)
  expect(await waitFor(async () => (await db.countConnections(current?.applicationName as string)) === 0, 3_000)).toBe(
    true,
  )
}

describe("database defaults that would change postgres.js's reading", () => {
  test('bytea_output and extra_float_digits set on the database: new connections still read the values', async () => {
    current = await coreApp(db.url, { max: 1 })
    const app = withRead(current.app)
    expect((await app.inject('/read')).json()).toEqual(truth)
    await db.sql.unsafe(`alter database ${name} set bytea_output = 'escape';
      alter database ${name} set extra_float_digits = -15`)
    await replaceConnections()
    let after = await app.inject('/read')
    for (let i = 0; i < 5 && after.statusCode === 503; i++) after = await app.inject('/read')
    expect(after.statusCode).toBe(200)
    expect(after.json()).toEqual(truth)
  })

  test('a DateStyle that is not ISO: the connection is refused, no request reads a date as another', async () => {
    current = await coreApp(db.url, { max: 1 })
    const app = withRead(current.app)
    await db.sql.unsafe(`alter database ${name} set DateStyle = 'SQL, DMY'`)
    await replaceConnections()
    const replies = [await app.inject('/read'), await app.inject('/read'), await app.inject('/read')]
    for (const reply of replies) {
      expect(reply.statusCode).toBe(503)
      expect(reply.headers['retry-after']).toBeDefined()
    }
    // Said in the log, with what to change.
    const said = current.logs.some((line) => /DateStyle/.test(JSON.stringify(line)))
    expect(said).toBe(true)
  })

  test("a DateStyle that is ISO keeps the database's input order", async () => {
    await db.sql.unsafe(`alter database ${name} set DateStyle = 'ISO, DMY'`)
    current = await coreApp(db.url, { max: 1 })
    current.app.get('/order', async (request) => {
      const [row] = await request.db<{ d: Date }[]>`select '03/04/2026'::date as d`
      return row
    })
    const reply = await current.app.inject('/order')
    expect(reply.statusCode).toBe(200)
    expect(reply.json().d).toBe('2026-04-03T00:00:00.000Z')
  })

  test('without the startup parameters (pool.pgbouncer, or a proxy that drops them): a connection that would misread is refused', async () => {
    await db.sql.unsafe(`alter database ${name} set bytea_output = 'escape'`)
    const app = Fastify()
    apps.push(app)
    const failed = await app.register(pgPoolCore, { connection: db.url, pool: { max: 1, pgbouncer: true } }).then(
      () => undefined,
      (error: Error & { code?: string; cause?: { code?: string; message?: string } }) => error,
    )
    expect(failed?.code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect(failed?.cause?.code).toBe('UNREADABLE_SETTINGS')
    expect(failed?.cause?.message).toMatch(/bytea_output/)
  })

  test('register, not lazy: a server whose DateStyle is not ISO fails it with the cause named', async () => {
    await db.sql.unsafe(`alter database ${name} set DateStyle = 'German'`)
    const error = (await refused(db.url)) as Error & { code?: string; cause?: { code?: string; message?: string } }
    expect(error.code).toBe('FST_PG_POOL_CONNECT_FAILED')
    expect(error.cause?.code).toBe('UNREADABLE_SETTINGS')
    expect(error.cause?.message).toMatch(/DateStyle/)
  })
})

describe('settings given to the pool that postgres.js would misread are refused at register', () => {
  const url = (key: string, value: string) => {
    const parsed = new URL(db.url)
    parsed.searchParams.set(key, value)
    return parsed.toString()
  }
  const cases: [string, () => unknown][] = [
    ['?options=-c DateStyle=German', () => url('options', '-c DateStyle=German')],
    ['?options=--bytea_output=escape', () => url('options', '--bytea_output=escape')],
    ['?client_encoding=LATIN1', () => url('client_encoding', 'LATIN1')],
    ['?DateStyle=SQL,DMY', () => url('DateStyle', 'SQL,DMY')],
    ['?extra_float_digits=0', () => url('extra_float_digits', '0')],
    ['connection.connection.bytea_output', () => object({ bytea_output: 'escape' })],
    ['connection.connection.client_encoding', () => object({ client_encoding: 'SQL_ASCII' })],
    ['connection.connection.DATESTYLE', () => object({ DATESTYLE: 'Postgres, MDY' })],
    ['connection.connection.extra_float_digits', () => object({ extra_float_digits: -3 })],
  ]
  for (const [label, connection] of cases) {
    test(label, async () => {
      const error = await refused(connection())
      expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(error.message).not.toContain(db.url)
    })
  }

  test('values that read right are accepted and used', async () => {
    const app = await register(
      object({ DateStyle: 'ISO, DMY', client_encoding: 'utf8', extra_float_digits: 3, bytea_output: 'HEX' }),
    )
    app.post('/notes', async (request) => {
      await request.db`insert into notes values (1, ${'café'}) on conflict (id) do update set body = excluded.body`
      const [row] = await request.db<{ d: Date }[]>`select '03/04/2026'::date as d`
      return row
    })
    const reply = await app.inject({ method: 'POST', url: '/notes' })
    expect(reply.json().d).toBe('2026-04-03T00:00:00.000Z')
    expect((await app.inject('/read')).json()).toEqual(truth)
    const [stored] = await db.sql`select body from notes where id = 1`
    expect(stored?.body).toBe('café')
  })
})

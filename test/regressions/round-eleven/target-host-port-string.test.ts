import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'
import { outcome, parts, restoreEnv } from './host-forms-kit.js'

// Docs (core README "Connection"): a `host` string such as `db:5433` is taken (its port checked);
// the view's `target` is `host:port/database` and `endpoint` its host and port (otel's
// server.address/server.port, the default pool name). postgres.js connects to the port written in
// the host string (`host.split(',').map(x => parseInt(x.split(':')[1] || port))`), but options.ts
// builds `target` as `${rest.host}:${rest.port ?? PGPORT ?? 5432}`: `127.0.0.1:36059:5432/db`,
// endpoint { host: '127.0.0.1:36059', port: 5432 }. Same for PGHOST=h:port and PGHOST=a,b.
let db: TestDatabase
const saved = { ...process.env }
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})
afterEach(() => restoreEnv(saved))

test('host: "h:port" (one host with its port): target and endpoint name the port connected to', async () => {
  const { host, port, rest } = parts(db)
  const r = await outcome({ ...rest, host: `${host}:${port}` })
  expect(r).toMatchObject({ status: 200, serverPort: port })
  expect(r.target).toBe(`${host}:${port}/${rest.database}`)
  expect(r.endpoint).toEqual({ host, port, database: rest.database })
})

test('host: "h:port" with a different `port`: the host string\'s port is used, and shown', async () => {
  const { host, port, rest } = parts(db)
  const r = await outcome({ ...rest, host: `${host}:${port}`, port: port === 1 ? 2 : 1 })
  expect(r).toMatchObject({ status: 200, serverPort: port })
  expect(r.endpoint).toEqual({ host, port, database: rest.database })
})

test('PGHOST=h:port: target and endpoint name the port connected to', async () => {
  const { host, port, rest } = parts(db)
  process.env.PGHOST = `${host}:${port}`
  delete process.env.PGPORT
  const r = await outcome({ ...rest })
  expect(r).toMatchObject({ status: 200, serverPort: port })
  expect(r.endpoint).toEqual({ host, port, database: rest.database })
})

test('PGHOST=a,b with PGPORT: endpoint port is PGPORT (not 5432)', async () => {
  const { host, port, rest } = parts(db)
  process.env.PGHOST = `${host},${host}`
  process.env.PGPORT = String(port)
  const r = await outcome({ ...rest })
  expect(r).toMatchObject({ status: 200, serverPort: port })
  expect(r.endpoint).toEqual({ host, port, database: rest.database })
})

test('URL without a port, PGPORT set: target names PGPORT, the port connected to', async () => {
  const { host, port, rest } = parts(db)
  process.env.PGPORT = String(port)
  const u = new URL(db.directUrl)
  u.port = ''
  const r = await outcome(u.toString())
  expect(r).toMatchObject({ status: 200, serverPort: port })
  expect(r.endpoint).toEqual({ host, port, database: rest.database })
})

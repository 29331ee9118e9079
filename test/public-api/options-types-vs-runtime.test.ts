import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { strict, typecheck } from './tsc-kit.js'

// Found by hostile probing (types). Options that register (or the route declaration) takes, and
// the docs describe, but that the shipped declarations refuse:
//
// 1. exactOptionalPropertyTypes (the workspace's own setting, and a common strict one). Round nine
//    typed every option `?: T | undefined` because "the runtime takes undefined as 'not given'
//    everywhere" (test/options/undefined-options.test-d.ts). Missed:
//    - `replica.readYourWrites?: false | {...}` (packages/core/src/options.ts, ReplicaOptions):
//      `{ readYourWrites: undefined }` is refused; register reads `given.readYourWrites ?? false`.
//    - `config.db?: RouteDbConfig` (packages/core/src/types.ts, the `FastifyContextConfig`
//      augmentation) and `config.backpressure?: RouteBackpressureConfig`
//      (packages/backpressure/src/plugin.ts): `config: { db: cond ? { transaction: true } : undefined }`
//      is refused (TS2375); the route is served as one without config.db.
// 2. `connection.ssl: 'disable'`: the core README ("Connection") documents it ("`ssl: 'disable'`
//    is no TLS, as `sslmode=disable` in a URL is") and register honours it
//    (test/regressions/connection-callbacks-and-ssl.test.ts), but ConnectionOptions takes
//    postgres.js's `ssl` type, which has no 'disable' (TS2769). A TypeScript user following the
//    README does not compile.

const args = [...strict, '--module', 'nodenext', '--moduleResolution', 'nodenext', '--skipLibCheck'] as const
const exact = [...args, '--exactOptionalPropertyTypes'] as const

const header = `
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import '@fastify-pg-pool/backpressure'
const app = Fastify()
declare const wantsTransaction: boolean
declare const low: boolean
`

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})

describe('what register and routes take at run time (controls)', () => {
  test('undefined as readYourWrites, config.db and config.backpressure; ssl disable', async () => {
    const app = Fastify()
    const u = new URL(db.directUrl)
    await app.register(pgPool, {
      connection: {
        host: u.hostname,
        port: Number(u.port),
        database: u.pathname.slice(1),
        username: decodeURIComponent(u.username),
        ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
        ssl: 'disable' as never,
      },
      pool: { max: 1 },
      replica: { readYourWrites: undefined as never },
      metrics: false,
    })
    app.get('/db', { config: { db: undefined as never } }, async (request) => (await request.db`select 1 as one`)[0])
    app.get(
      '/bp',
      { config: { backpressure: undefined as never } },
      async (request) => (await request.db`select 1 as one`)[0],
    )
    const answers = [(await app.inject('/db')).json(), (await app.inject('/bp')).json()]
    await app.close()
    expect(answers).toEqual([{ one: 1 }, { one: 1 }])
  })
})

describe('the declarations take them too', () => {
  test('exactOptionalPropertyTypes: replica.readYourWrites may be undefined', async () => {
    const code = `${header}
await app.register(pgPool, { replica: { readYourWrites: process.env.RYW_SECRET ? { secret: process.env.RYW_SECRET } : undefined } })
`
    expect((await typecheck({ 'ryw.ts': code }, exact)).errors).toEqual([])
  }, 240_000)

  test('exactOptionalPropertyTypes: config.db may be undefined', async () => {
    const code = `${header}
app.post('/a', { config: { db: wantsTransaction ? { transaction: true } : undefined } }, async () => null)
`
    expect((await typecheck({ 'db.ts': code }, exact)).errors).toEqual([])
  }, 240_000)

  test('exactOptionalPropertyTypes: config.backpressure may be undefined', async () => {
    const code = `${header}
app.get('/b', { config: { backpressure: low ? { priority: 'low' } : undefined } }, async () => null)
`
    expect((await typecheck({ 'bp.ts': code }, exact)).errors).toEqual([])
  }, 240_000)

  test("connection.ssl 'disable', as the core README documents it", async () => {
    const code = `${header}
await app.register(pgPool, { connection: { host: 'db.internal', database: 'app', ssl: 'disable' } })
`
    expect((await typecheck({ 'ssl.ts': code }, args)).errors).toEqual([])
  }, 240_000)
})

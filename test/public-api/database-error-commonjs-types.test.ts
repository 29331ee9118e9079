import Fastify from 'fastify'
import pgPool, { DatabaseError } from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { strict, typecheck } from './tsc-kit.js'

// Found by hostile probing (types). Round nine fixed `app.db` and `request.db` for CommonJS
// TypeScript projects (module commonjs, moduleResolution node10, no esModuleInterop: "the settings
// of many existing Fastify apps", test/consumer-settings/consumer-types.test.ts) by turning the
// default import of postgres.js's `export =` types in types.ts into `import type * as postgres`.
// The same default import is still in packages/core/src/error-mapping.ts:1
// (`import postgres from 'postgres'`, kept in dist/error-mapping.d.ts), which declares
// `class DatabaseError extends postgres.PostgresError`. In that setting the base does not resolve
// (TS1259, hidden by skipLibCheck), and DatabaseError keeps only what it declares itself: the
// README's pattern `if (error instanceof DatabaseError)` then has no `message`, `constraint_name`,
// `table_name`, `severity`, `detail`..., the fields the core README lists ("`code` (SQLSTATE),
// `statusCode`, `condition`, `constraint_name`, `table_name`, `column_name`, `schema_name` as
// before"). tsc reports, for the fixture below:
//   TS2339: Property 'message' does not exist on type 'DatabaseError'. (and constraint_name, ...)
// Under nodenext the same fixture compiles (the control below), and at run time the fields are there.

const fixture = `
import Fastify from 'fastify'
import pgPool, { DatabaseError } from 'fastify-pg-pool'

export async function main(): Promise<void> {
  const app = Fastify()
  await app.register(pgPool, { connection: process.env.DATABASE_URL })
  app.setErrorHandler((error, _request, reply) => {
    if (error instanceof DatabaseError && error.code === '23505') {
      const message: string = error.message
      const constraint: string | undefined = error.constraint_name
      const table: string | undefined = error.table_name
      const column: string | undefined = error.column_name
      const schema: string | undefined = error.schema_name
      const severity: string = error.severity
      return reply.code(409).send({ message, constraint, table, column, schema, severity })
    }
    return reply.send(error)
  })
  await app.close()
}
`

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table items (id int primary key)`
})
afterAll(async () => {
  await db?.drop()
})

describe('DatabaseError in a CommonJS TypeScript project (module commonjs, moduleResolution node10)', () => {
  test('at run time a unique violation caught in a handler has the fields the fixture reads', async () => {
    const app = Fastify()
    await app.register(pgPool, { connection: db.url, health: false, metrics: false, backpressure: false })
    let caught: unknown
    app.get('/', async (request) => {
      try {
        await request.db`insert into items values (1), (1)`
      } catch (error) {
        caught = error
      }
      return {}
    })
    await app.inject('/')
    await app.close()
    expect(caught).toBeInstanceOf(DatabaseError)
    expect(caught).toMatchObject({
      code: '23505',
      constraint_name: 'items_pkey',
      table_name: 'items',
      schema_name: 'public',
      severity: 'ERROR',
    })
    expect(typeof (caught as Error).message).toBe('string')
  })

  test('control: under nodenext the fixture compiles', async () => {
    const result = await typecheck({ 'server.ts': fixture }, [
      ...strict,
      '--module',
      'nodenext',
      '--moduleResolution',
      'nodenext',
      '--skipLibCheck',
    ])
    expect(result.errors).toEqual([])
  }, 240_000)

  test('the fixture compiles: DatabaseError keeps postgres.js PostgresError fields', async () => {
    const result = await typecheck({ 'server.ts': fixture }, [
      ...strict,
      '--module',
      'commonjs',
      '--moduleResolution',
      'node10',
      '--skipLibCheck',
    ])
    expect(result.errors).toEqual([])
  }, 240_000)
})

import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
// Not exported: the built module, the same files the package name resolves to (src would declare
// core's Fastify augmentation a second time).
import { resolveConnection } from '../../packages/core/dist/options.js'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

// The resolved connection options of a password function also serve clients that postgres.js
// opens and reopens itself (the LISTEN connection, samplers): there postgres.js calls the
// password on each connection, in a promise nobody handles. A failing function must fail the
// login, never reject there (an unhandled rejection ends the process).

const role = uniqueName('fpp_source').replace('-', '_')
const password = `src@${randomBytes(8).toString('hex')}`
let db: TestDatabase
failOnProcessErrors()

function connectionWith(fetch: () => string | Promise<string>) {
  const parsed = new URL(db.directUrl)
  return resolveConnection(
    {
      host: parsed.hostname,
      port: Number(parsed.port),
      database: parsed.pathname.slice(1),
      username: role,
      password: fetch,
    },
    {},
  ).connection
}

beforeAll(async () => {
  db = await createTestDatabase()
  await db.admin.unsafe(`create role ${role} login password '${password}'`)
})
afterAll(async () => {
  // Dropped by drop() before it ends the admin client: a drop after it failed silently, and the role stayed.
  await db.drop([role])
})

describe('a password function in the resolved postgres.js options', () => {
  test('postgres.js calls it for each connection; each value is remembered for redaction', async () => {
    let calls = 0
    const connection = connectionWith(() => {
      calls++
      return password
    })
    expect(typeof connection.options.password).toBe('function')
    const sql = postgres({ ...connection.options, max: 1, onnotice: () => {} })
    try {
      expect(await sql`select current_user as user`).toEqual([{ user: role }])
      // A server that trusts the role (an external one, e.g. CI's local PostgreSQL) never asks.
      if (calls === 0 && inject('serverKind') === 'external') return
      expect(calls).toBe(1)
      expect([...connection.secret]).toEqual([password])
    } finally {
      await sql.end({ timeout: 0 })
    }
  })

  test('a rejecting or throwing function fails the login with 28P01, and nothing is left unhandled', async () => {
    for (const fetch of [
      () => Promise.reject(new Error('token service down')),
      () => {
        throw new Error('no credentials')
      },
    ]) {
      const connection = connectionWith(fetch)
      const sql = postgres({ ...connection.options, max: 1, connect_timeout: 5, onnotice: () => {} })
      try {
        const outcome = await sql`select 1`.then(
          () => 'connected',
          (error: { code?: string }) => error.code,
        )
        // A server that trusts the role never asks for the password.
        expect(outcome === '28P01' || (outcome === 'connected' && inject('serverKind') === 'external')).toBe(true)
      } finally {
        await sql.end({ timeout: 0 })
      }
    }
    // failOnProcessErrors checks, after the file, that no rejection went unhandled.
  })
})

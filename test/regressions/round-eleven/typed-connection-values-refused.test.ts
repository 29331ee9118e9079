import pgPoolCore, { type ConnectionOptions } from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

// Hostile probing, round twelve (options, second round on commit 6528993).
//
// Docs: packages/core/README.md "Connection": "Every value of an options object is checked against
// what postgres.js takes ... and refused by name otherwise." The shipped type of `connection`
// (ConnectionOptions, postgres.js's Options) says `backoff: boolean | ((attemptNum) => number)`
// and `keep_alive: number | null`.
//
// What happens: connectionValueRules (packages/core/src/options.ts) takes `backoff` only as a
// function or an integer >= 0, and `keep_alive` only as an integer >= 0, null or false. So values
// the declarations take, and postgres.js takes (connection.js: `delay = (typeof backoff ===
// 'function' ? backoff(retries) : backoff) * 1000`; `socket.setKeepAlive(true, 1000 * keep_alive)`),
// compile and are then refused at register with FST_PG_POOL_INVALID_OPTION:
//   `backoff: false`, `backoff: true` (the typed forms), `backoff: 0.5`, `keep_alive: 7.5`.
// Before 6528993 they were taken. Expected: taken.

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})

function parts() {
  const u = new URL(db.directUrl)
  return {
    host: u.hostname,
    port: Number(u.port),
    database: decodeURIComponent(u.pathname.slice(1)),
    username: decodeURIComponent(u.username),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
  }
}

async function answers(connection: ConnectionOptions): Promise<unknown> {
  const app = Fastify()
  try {
    await app.register(pgPoolCore, { connection, pool: { max: 1 } })
    app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
    await app.ready()
    return (await app.inject('/q')).json()
  } catch (error) {
    return `refused: ${(error as Error).message}`
  } finally {
    await app.close().catch(() => {})
  }
}

describe('values the declarations and postgres.js take', () => {
  test('backoff: false (typed boolean)', async () => {
    const connection: ConnectionOptions = { ...parts(), backoff: false }
    expect(await answers(connection)).toEqual({ one: 1 })
  })

  test('backoff: true (typed boolean)', async () => {
    const connection: ConnectionOptions = { ...parts(), backoff: true }
    expect(await answers(connection)).toEqual({ one: 1 })
  })

  test('backoff: 0.5 (seconds)', async () => {
    expect(await answers({ ...parts(), backoff: 0.5 } as never)).toEqual({ one: 1 })
  })

  test('keep_alive: 7.5 (typed number)', async () => {
    const connection: ConnectionOptions = { ...parts(), keep_alive: 7.5 }
    expect(await answers(connection)).toEqual({ one: 1 })
  })

  test('control: backoff: 2 and keep_alive: 30', async () => {
    expect(await answers({ ...parts(), backoff: 2, keep_alive: 30 } as never)).toEqual({ one: 1 })
  })
})

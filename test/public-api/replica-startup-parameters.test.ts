import type { PgPoolCoreOptions, ReplicaTarget } from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, expectTypeOf, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing (types). A replica is "a URL, postgres.js options, or { connection, pool }
// with pool options of its own" (core README "Read replicas", PgPoolCoreOptions.replicas), and its
// type, ReplicaTarget, is `string | ConnectionOptions | { connection; pool? }`. postgres.js options
// have a key named `connection` themselves: the startup parameters (the core README's own advice
// for custom settings: `connection: { connection: { 'app.region': 'eu' } }`). A replica given as
// postgres.js options with startup parameters compiles, and register refuses it:
//   Invalid option replicas[0].host: unknown option; expected one of connection, pool
// resolveReplicas (packages/core/src/options.ts:616, `'connection' in target`) takes every object
// with a `connection` key for the `{ connection, pool }` form. The same options as the primary's
// `connection` are accepted (test/docs/docs-truth-held.test.ts).

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  await db?.drop()
})

function optionsOf(url: string) {
  const u = new URL(url)
  return {
    host: u.hostname,
    port: Number(u.port),
    database: u.pathname.slice(1),
    username: decodeURIComponent(u.username),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
  }
}

async function registerWithReplica(replica: ReplicaTarget): Promise<string> {
  const app = Fastify()
  try {
    // The "replica" is this file's database itself: what is checked here is only whether the
    // options are taken (a primary as replica is simply not usable for reads).
    await app.register(pgPool, {
      connection: db.url,
      health: false,
      metrics: false,
      backpressure: false,
      pool: { max: 1, pgbouncer: db.viaBouncer },
      replicas: [replica],
      replica: { lagInterval: 60_000 },
    })
    await app.ready()
    return `registered, pools: ${app.pgPools
      .all()
      .map((view) => view.name)
      .join(', ')}`
  } catch (error) {
    return `refused: ${(error as Error).message}`
  } finally {
    await app.close()
  }
}

describe('a replica given as postgres.js options with startup parameters', () => {
  test('its type accepts it', () => {
    expectTypeOf<{ host: string; connection: { 'app.region': string } }>().toExtend<ReplicaTarget>()
    const options: PgPoolCoreOptions = { replicas: [{ host: 'replica', connection: { 'app.region': 'eu' } }] }
    void options
  })

  test('the entry form with the same options is taken (control)', async () => {
    const found = await registerWithReplica({
      connection: { ...optionsOf(db.directUrl), connection: { 'app.region': 'eu' } },
    })
    expect(found).toBe('registered, pools: primary, replica-0')
  })

  test('register takes it, as it takes the same options for the primary', async () => {
    const found = await registerWithReplica({ ...optionsOf(db.directUrl), connection: { 'app.region': 'eu' } })
    expect(found).toBe('registered, pools: primary, replica-0')
  })
})

import pgPoolCore, { type ReplicaTarget } from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

// Hostile probing, round twelve (options, second round on commit 6528993).
//
// Docs: docs/replicas.md "Budgets, health and metrics": "Each replica has its own lease pool (`max`
// of its own or the primary's)". packages/core/README.md "Connection": `max` and `connect_timeout`
// are "read from where they are given" (an options object, the URL's `?max=`, `?connect_timeout=`,
// `?statement_timeout=`); "given both in the options object and in `pool`, `max` or
// `connect_timeout` is refused (one would be ignored)".
//
// What happens: resolveReplicas (packages/core/src/options.ts, `const pool = { ...primaryPool,
// ...entry.pool }` then resolvePoolOptions(pool, fromUrl, env)) hands every replica the PRIMARY's
// pool options as if they were the replica's own `pool`:
// 1. A replica given as postgres.js options with its own `max` (or `connect_timeout`), while the
//    primary has `pool: { max }` (or `connectTimeout`), is refused at register:
//      Invalid option replicas[0].max: and pool.max are both given: give only pool.max
//    The replica has no `pool`; the only `pool.max` is the primary's. Before 6528993 it was taken
//    (and its max silently ignored); now no options-form replica can have a max of its own while
//    the primary sets one.
// 2. A replica URL's own `?max=`, `?connect_timeout=` and `?statement_timeout=` lose to the
//    primary's pool options: the replica gets the primary's max and timeouts. For
//    `?statement_timeout=` this is new in 6528993: before, the URL's startup parameter reached the
//    replica's session; now the replica's sessions (and its client deadline) use the primary's
//    pool.statementTimeout.

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

function withQuery(url: string, query: string) {
  return `${url}${url.includes('?') ? '&' : '?'}${query}`
}

/** The replica pool's resolved options, or the refusal. */
async function replicaOptions(replica: ReplicaTarget, primaryPool: Record<string, unknown>) {
  const app = Fastify()
  try {
    // The "replica" is this file's database itself (not a standby: it gets no reads), enough to
    // see which options its pool was given.
    await app.register(pgPoolCore, {
      connection: db.directUrl,
      pool: { lazy: true, ...primaryPool },
      replicas: [replica],
      replica: { lagInterval: 60_000 },
    })
    await app.ready()
    const view = app.pgPools.all().find((v) => v.name === 'replica-0')
    const o = view?.options
    return { max: o?.max, connectTimeout: o?.connectTimeout, statementTimeout: o?.statementTimeout }
  } catch (error) {
    return `refused: ${(error as Error).message}`
  } finally {
    await app.close().catch(() => {})
  }
}

describe("a replica's own max and connect_timeout, when the primary sets pool options", () => {
  test('replica as postgres.js options with max: its own max, not a refusal', async () => {
    const found = await replicaOptions({ ...parts(), max: 1 } as ReplicaTarget, { max: 3 })
    expect(found).toMatchObject({ max: 1 })
  })

  test('replica as postgres.js options with connect_timeout: its own, not a refusal', async () => {
    const found = await replicaOptions({ ...parts(), connect_timeout: 1 } as ReplicaTarget, {
      connectTimeout: 4_000,
    })
    expect(found).toMatchObject({ connectTimeout: 1_000 })
  })

  test("replica URL's ?max= is its own max (the primary's pool.max is the primary's)", async () => {
    const found = await replicaOptions(withQuery(db.directUrl, 'max=1'), { max: 3 })
    expect(found).toMatchObject({ max: 1 })
  })

  test("replica URL's ?statement_timeout= reaches the replica (it did before 6528993)", async () => {
    const found = await replicaOptions(withQuery(db.directUrl, 'statement_timeout=1s'), {
      statementTimeout: 5_000,
    })
    expect(found).toMatchObject({ statementTimeout: 1_000 })
  })

  test('control: without primary pool options, the replica keeps its own max', async () => {
    const found = await replicaOptions({ ...parts(), max: 1 } as ReplicaTarget, {})
    expect(found).toMatchObject({ max: 1 })
  })
})

// DEFECT (third-b, medium). What the user does: runs read replicas with an app `types` parser the
// pool accepts everywhere else, the MySQL-style 0/1 booleans round thirteen made the open check
// safe against (open-check-bool-parser: `bool: { to: 16, from: [16], parse: (x) => (x === 't' ?
// 1 : 0), serialize }`), given in the connection options of the primary and the replica. What
// they see: the replica never takes a read: every lag sample says "not a standby" (its
// `pg_is_in_recovery()` came back as 1, not `true`), `replica().usable` stays false, /health and
// /metrics report the standby as no standby ("not a standby"), and every read-only route is
// served by the primary, with no error or log line naming the cause. By the same code (not
// asserted here): a `transform: { value: { from } }` that maps booleans does the same, and a
// float8 parser that keeps floats as strings makes the replay age unreadable (`typeof age ===
// 'number'`), so any lag in bytes reads as infinite seconds. What they should see: the monitor reading its own
// statements out of reach of the app's parsers and transforms (as open() now does), the replica
// usable once it caught up. Cause: packages/core/src/lsn-source.ts:38-62 builds the monitor's
// client from the app's connection options (types, transform included) and reads REPLICA_SQL
// with `client.sql.unsafe(text)` (parsed rows), then `recovery === true` (lsn-source.ts:119) and
// `typeof age === 'number'` (:118); firstValues (:132) also reads whatever a row transform made.
// Suggested fix: read REPLICA_SQL and PRIMARY_SQL with `.raw()` by position and compare texts
// ('t', a decimal parsed with Number), as postgres-adapter.ts open() does for OPEN_SQL (with the
// row-transform caveat of row-transform-reaches-raw.test.ts), or strip `types`/`transform` from the
// monitor's own client options.
// Round thirteen, third round: failed on 381590e (both servers); passes after its fix.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterEach, describe, expect, test } from 'vitest'
import { sleep } from '../../support/database.js'
import { useNotesCluster } from '../../support/notes-cluster.js'

const notes = useNotesCluster('third-b-parsers')
let app: FastifyInstance | undefined

afterEach(async () => {
  await app?.close()
  app = undefined
})

const zeroOne = {
  bool: {
    to: 16,
    from: [16],
    serialize: (x: unknown) => (x ? 't' : 'f'),
    parse: (x: string) => (x === 't' ? 1 : 0),
  },
}

function options(url: string, extra: Record<string, unknown>): Record<string, unknown> {
  const parsed = new URL(url)
  return {
    host: parsed.hostname,
    port: Number(parsed.port),
    database: parsed.pathname.slice(1),
    username: decodeURIComponent(parsed.username),
    ...(parsed.password === '' ? {} : { password: decodeURIComponent(parsed.password) }),
    ...extra,
  }
}

async function replicaState(extra: Record<string, unknown>): Promise<{ usable: boolean; error: unknown }> {
  const instance = Fastify()
  app = instance
  await instance.register(pgPoolCore, {
    connection: options(notes.database.primaryUrl, extra) as never,
    replicas: [options(notes.database.standbyUrls[0] as string, extra) as never],
    replica: { lagInterval: 50 },
    pool: { max: 2 },
  })
  await instance.ready()
  // Five seconds of samples every 50 ms: the replica (idle, caught up) is usable within one.
  for (let i = 0; i < 100; i++) {
    if (instance.pgPools.all()[1]?.replica()?.usable === true) break
    await sleep(50)
  }
  const state = instance.pgPools.all()[1]?.replica()
  return { usable: state?.usable ?? false, error: state?.lag?.error }
}

describe("the replica monitor and the app's parsers", () => {
  test('held: without parsers the replica becomes usable', async () => {
    expect(await replicaState({})).toEqual({ usable: true, error: undefined })
  })

  test('with a 0/1 bool parser the replica becomes usable too', async () => {
    expect(await replicaState({ types: zeroOne })).toEqual({ usable: true, error: undefined })
  })
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { freeze } from '../support/freeze-node.js'
import { type NotesCluster, startNotesCluster } from '../support/replication.js'

// Found by hostile probing (failed before the fix): Promised (docs/replicas.md, "Which reads go where"): "A replica that went down since its
// last sample is found when the read's connection cannot be opened there: the primary serves it
// instead (`unreachable`), nothing of it having been sent." (lease.ts LeaseContext.fallback: "A read
// is never failed because a replica is down.")
//
// A replica that goes down by freezing / becoming unreachable at the network level (SIGSTOP here;
// a dead VM or a partition behaves the same: the TCP opening never completes the startup) with
// no idle connection in its pool: nothing of the read is sent, its connection "cannot be opened"
// (it would fail after connectTimeout), but the read's own wait (acquireTimeout) runs on the
// replica's pool and expires first whenever acquireTimeout <= connectTimeout: 503
// FST_PG_POOL_ACQUIRE_TIMEOUT, the primary never tried. The fallback only reacts to
// FST_PG_POOL_CONNECT_FAILED (lease.ts acquireFailed). With the defaults (both 5000 ms) it is a
// race between two equal timers (observed both ways); here acquireTimeout 2000 < connectTimeout
// 5000 (default) makes it deterministic. Expected: 200 from the primary, fallback 'unreachable'.

let notes: NotesCluster
let app: FastifyInstance
let thaw: (() => void) | undefined

beforeAll(async () => {
  notes = await startNotesCluster('probe_r2_frozen_noidle')
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    // lazy: the replica pool holds no idle connection (as after idleTimeout, or all in use).
    replicas: [{ connection: notes.database.standbyUrls[0] as string, pool: { lazy: true } }],
    replica: { lagInterval: 60_000, maxLag: { seconds: 600 } },
    pool: { max: 2, acquireTimeout: 2_000 },
  })
  app.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db`select pg_is_in_recovery() as standby`
    return row
  })
  await app.ready()
  await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
}, 120_000)

afterAll(async () => {
  thaw?.()
  await app?.close()
  await notes?.destroy()
})

describe('a replica frozen between two samples, no idle connection in its pool', () => {
  test('the read is served by the primary (unreachable), not failed with 503', async () => {
    expect(app.pgPools.all()[1]?.stats().open).toBe(0)
    thaw = freeze(notes.cluster, notes.cluster.standby)
    const fallbacks: string[] = []
    app.pgPool.on('readFallback', (reason) => fallbacks.push(reason))
    const read = await app.inject('/where')
    expect({ status: read.statusCode, body: read.json(), fallbacks }).toEqual({
      status: 200,
      body: { standby: false },
      fallbacks: ['unreachable'],
    })
  }, 60_000)
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitFor } from '../support/database.js'
import { type PgBouncer, startPgBouncer } from '../support/pgbouncer.js'
import { type NotesCluster, startNotesCluster } from '../support/replication.js'

// Found by hostile probing (failed before the fix): Promised (docs/replicas.md, "Behind PgBouncer"): "replicas are reached directly (or
// through their own PgBouncer)". Since 1a3b43b every replica connection (the replica's lease pool
// and the monitor's, options.ts readOnlySessions) sends `default_transaction_read_only` as a
// startup parameter. PgBouncer refuses startup parameters it does not know ("unsupported startup
// parameter", unless the operator lists it in ignore_startup_parameters): a replica behind its own
// PgBouncer can no longer be sampled or connected to, is never usable, and every read silently
// goes to the primary (readFallback 'no_replica'). Expected: the replica serves the reads
// (`pg_is_in_recovery()` true), as before the change.

let notes: NotesCluster
let bouncer: PgBouncer
let app: FastifyInstance

beforeAll(async () => {
  notes = await startNotesCluster('probe_r2_replica_bouncer')
  bouncer = await startPgBouncer({ upstream: notes.database.standbyUrls[0] as string })
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [
      { connection: bouncer.via(notes.database.standbyUrls[0] as string), pool: { pgbouncer: true, lazy: true } },
    ],
    replica: { lagInterval: 50 },
    pool: { max: 2 },
  })
  app.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db`select pg_is_in_recovery() as standby`
    return row
  })
  await app.ready()
}, 120_000)

afterAll(async () => {
  await app?.close()
  await bouncer?.stop()
  await notes?.destroy()
})

describe('a replica behind its own PgBouncer (transaction mode)', () => {
  test('becomes usable and serves read-only routes', async () => {
    const usable = await waitFor(() => app.pgPools.all()[1]?.replica()?.usable === true, 10_000, 20)
    const read = await app.inject('/where')
    expect({
      usable,
      lagError: usable ? undefined : app.pgPools.all()[1]?.replica()?.lag?.error,
      read: read.json(),
    }).toEqual({ usable: true, lagError: undefined, read: { standby: true } })
  }, 60_000)
})

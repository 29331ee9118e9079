import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { type NotesCluster, startNotesCluster } from '../support/replication.js'

// Found by hostile probing, round 2 (options), failing before the fix. The core validates PGTARGETSESSIONATTRS (README "Connection":
// a target_session_attrs it does not know is refused, "also from PGTARGETSESSIONATTRS"), and
// options.ts resolveReplicas resolves each replica with an empty environment. But postgres.js reads
// process.env.PGTARGETSESSIONATTRS itself (index.js tsa(): option || URL || env), for the replicas'
// clients too. With the libpq setting a user exports for the primary's failover
// (PGTARGETSESSIONATTRS=read-write, the README's host-list advice), every replica connection is
// opened as a read-only session (default_transaction_read_only, options.ts readOnlySessions),
// judged not writable by postgres.js and terminated (CONNECTION_DESTROYED): register rejects with
// FST_PG_POOL_CONNECT_FAILED, the app does not start (with pool.lazy, the replica would never get a
// connection). A replica is a standby by definition: the
// primary's target_session_attrs (option or environment) must not apply to it.

let notes: NotesCluster
let app: FastifyInstance | undefined
const saved = process.env.PGTARGETSESSIONATTRS

beforeAll(async () => {
  notes = await startNotesCluster('probe_r2_tsa_env')
}, 120_000)
afterEach(async () => {
  await app?.close().catch(() => {})
  app = undefined
  if (saved === undefined) delete process.env.PGTARGETSESSIONATTRS
  else process.env.PGTARGETSESSIONATTRS = saved
})
afterAll(async () => {
  await notes?.destroy()
})

async function replicaApp(): Promise<FastifyInstance> {
  const instance = Fastify()
  await instance.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: { lagInterval: 50, maxLag: { seconds: 60 } },
    pool: { max: 2, connectTimeout: 5_000 },
  })
  instance.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db`select pg_is_in_recovery() as standby`
    return row
  })
  await instance.ready()
  return instance
}

describe('PGTARGETSESSIONATTRS meant for the primary', () => {
  test('control (passes): without it, a read-only route is served by the standby', async () => {
    delete process.env.PGTARGETSESSIONATTRS
    app = await replicaApp()
    const current = app
    await waitUntil(() => current.pgPools.all()[1]?.replica()?.usable === true, 'the replica usable', 30_000)
    expect((await app.inject('/where')).json()).toEqual({ standby: true })
  })

  test('PGTARGETSESSIONATTRS=read-write: the replica still serves reads', async () => {
    process.env.PGTARGETSESSIONATTRS = 'read-write'
    const started = await replicaApp().then(
      (instance) => {
        app = instance
        return 'started'
      },
      (error: Error & { code?: string; cause?: { code?: string } }) => `${error.code} (${error.cause?.code})`,
    )
    // Now: FST_PG_POOL_CONNECT_FAILED (CONNECTION_DESTROYED), the replica's first connection.
    expect(started).toBe('started')
    const current = app as FastifyInstance
    await waitUntil(() => current.pgPools.all()[1]?.replica()?.usable === true, 'the replica usable', 30_000)
    expect((await current.inject('/where')).json()).toEqual({ standby: true })
  })
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { type NotesCluster, startNotesCluster } from '../support/replication.js'

// Found by hostile probing (failed before the fix): a replica promoted between two lag samples
// took the writes of read-only routes and of app.db.replica, answered 200 (a split brain).
// Promised (docs/replicas.md): "A read-only route cannot write, wherever it lands." The pool made
// a read read-only only when it landed on the primary and relied on a replica being a standby.
// Replica sessions now start with default_transaction_read_only (a startup parameter, which the
// session reset keeps). Until the next sample sees the promotion, reads still land on the
// promoted node (the monitor's window, lagInterval); they can no longer write there.

let notes: NotesCluster
let app: FastifyInstance

beforeAll(async () => {
  notes = await startNotesCluster('probe_promoted')
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: { lagInterval: 60_000, maxLag: { seconds: 60 } },
    pool: { max: 2 },
  })
  app.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db`select current_setting('port')::int as port, pg_is_in_recovery() as standby`
    return row
  })
  app.post(
    '/write-in-read',
    { config: { db: { readOnly: true } } },
    async (request) => request.db`insert into notes (body) values ('written by a read-only route')`,
  )
  await app.ready()
  await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
}, 120_000)

afterAll(async () => {
  await app?.close()
  await notes?.destroy()
})

describe('a replica promoted between two lag samples', () => {
  test('a read-only route and app.db.replica cannot write on it (25006)', async () => {
    const standbyPort = notes.cluster.standby.port
    expect((await app.inject('/where')).json()).toMatchObject({ port: standbyPort, standby: true })
    await notes.cluster.promote(notes.cluster.standby)

    const write = await app.inject({ method: 'POST', url: '/write-in-read' })
    // A job's read-only lease (app.db.replica) too.
    const replicaDb = (app.db as unknown as { replica: FastifyInstance['db'] }).replica
    const job = await replicaDb`insert into notes (body) values ('written by app.db.replica')`.then(
      () => 'written',
      (error: { code?: string }) => error.code,
    )
    const onPromoted = postgres(notes.database.standbyUrls[0] as string, { max: 1, onnotice: () => {} })
    try {
      const rows = await onPromoted`select count(*)::int as n from notes where body like 'written by %'`
      // The write is refused as in every other case, and nothing was written on the promoted node.
      expect({ status: write.statusCode, code: write.json().code, job, written: rows[0]?.n }).toEqual({
        status: 500,
        code: '25006',
        job: '25006',
        written: 0,
      })
    } finally {
      await onPromoted.end({ timeout: 1 })
    }
  })
})

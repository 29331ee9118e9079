// DEFECT (probe-replicas, medium). What the user does: lists in `replicas` a URL that reaches a
// streaming standby of ANOTHER cluster: a replica host re-seeded from another primary, a DNS name or
// Kubernetes Service left pointing at staging's standby, a standby left over from the cluster the
// primary replaced (a database of the same name on both). What they should get: that server never
// serves reads as a replica of this primary (it holds another server's rows), like a replica URL
// that names a primary ('not a standby'); reads go to the primary, health and the view say why.
// What they got: the monitor sees a standby (pg_is_in_recovery()), compares its replay position
// with this primary's as if both were one WAL stream (another cluster's positions mean nothing
// here) and, its last replayed commit being recent, calls it usable: every read-only route
// answered another database's rows (`[{ body: 'cluster b ...' }]`), and a read-your-writes token
// was checked against another server's WAL position. Fix: the monitor compares the servers'
// system identifiers (pg_control_system(), the same on every standby of a cluster and across
// failovers) and takes a replica of another cluster out ('another cluster').

import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../../../support/database.js'
import { type NotesCluster, startNotesCluster } from '../../../support/replication.js'

let ours: NotesCluster
let theirs: NotesCluster

beforeAll(async () => {
  // One after the other: two clusters starting at once on two loaded cores is slow.
  ours = await startNotesCluster('probe_cluster_notes')
  theirs = await startNotesCluster('probe_cluster_notes')
}, 120_000)

afterAll(async () => {
  await Promise.all([ours?.destroy(), theirs?.destroy()])
})

describe('a replica URL that reaches a standby of another cluster', () => {
  test('gets no reads: the read-only route answers this primary’s rows', async () => {
    await ours.primarySql`insert into notes (body) values ('ours')`
    // Their standby's replay position below ours, and its last replayed commit recent: by
    // position and age alone it looks like a replica a little behind.
    for (let i = 0; i < 2; i++) await ours.primarySql`select pg_switch_wal()`
    await ours.primarySql`insert into notes (body) values ('ours again')`
    await theirs.primarySql`insert into notes (body) values ('theirs: another database')`
    await theirs.cluster.waitForReplay(theirs.cluster.standby)

    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: ours.database.primaryUrl,
      replicas: [theirs.database.standbyUrls[0] as string],
      replica: { lagInterval: 50, maxLag: { seconds: 600 } },
      pool: { max: 2 },
    })
    await app.register(pgPoolHealth)
    app.get('/notes', { config: { db: { readOnly: true } } }, async (request) => {
      const rows = await request.db`select body from notes order by id`
      return rows.map((row) => row.body)
    })
    try {
      await app.ready()
      const replica = app.pgPools.all()[1]
      // A few rounds of samples, each of which could have made it usable.
      const first = replica?.replica()?.lag?.at ?? 0
      await waitUntil(() => (replica?.replica()?.lag?.at ?? 0) > first + 200, 'a few lag samples', 10_000)
      // Before the fix: ['theirs: another database'].
      expect((await app.inject('/notes')).json()).toEqual(['ours', 'ours again'])
      expect(replica?.replica()?.usable).toBe(false)
      expect(replica?.replica()?.lag?.error).toMatch(/another cluster/)
      const ready = await app.inject('/health/ready')
      expect(ready.statusCode).toBe(200)
      expect(ready.json().status).toBe('warn')
    } finally {
      await app.close()
    }
  })

  test('held: a standby of this cluster is usable (the check does not take real replicas out)', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: ours.database.primaryUrl,
      replicas: [ours.database.standbyUrls[0] as string],
      replica: { lagInterval: 50, maxLag: { seconds: 600 } },
      pool: { max: 2 },
    })
    app.get('/standby', { config: { db: { readOnly: true } } }, async (request) => {
      const [row] = await request.db`select pg_is_in_recovery() as standby`
      return row
    })
    try {
      await app.ready()
      await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
      expect((await app.inject('/standby')).json()).toEqual({ standby: true })
    } finally {
      await app.close()
    }
  })
})

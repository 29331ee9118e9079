// Round sixteen (second observability probe). What the operator reads on /health/ready for a
// read replica that was restarted and has replayed no transaction since (its replay held back:
// paused, or its WAL stream slow), while the primary committed: its lag in bytes is known, its
// lag in time is not (pg_last_xact_replay_timestamp() is null, and it has not reached a position
// of the primary's yet). The body said
//   "replica lagging: Infinity s, 176 bytes behind (maxLag 600 s): reads go elsewhere"
// the Infinity this round's health fix took out of the maxLag bounds, now in the lag itself (and
// in the readiness log line), beside "observedValue": null. The unknown time is said in words.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterEach, expect, test } from 'vitest'
import { waitUntil } from '../../../support/database.js'
import { useNotesCluster } from '../../../support/notes-cluster.js'

const notes = useNotesCluster('second_observe_lag_unknown_time')
let app: FastifyInstance | undefined

afterEach(async () => {
  await app?.close()
  app = undefined
})

test('a restarted replica behind by known bytes and an unknown time: the body prints no Infinity', async () => {
  const { cluster } = notes
  // A restartpoint past every commit so far: the restarted standby's redo replays none. (A
  // commit of the server's own in between, autovacuum's, would be replayed: then again.)
  let replayedNone = false
  for (let attempt = 0; attempt < 3 && !replayedNone; attempt++) {
    await cluster.resumeReplay(cluster.standby).catch(() => {})
    await notes.primarySql`checkpoint`
    await cluster.waitForReplay(cluster.standby)
    const before = postgres(cluster.standby.url, { max: 1, onnotice: () => {} })
    await before`checkpoint`
    await before.end({ timeout: 1 })
    await cluster.standby.stop()
    await cluster.standby.start()
    await cluster.pauseReplay(cluster.standby)
    const standbySql = postgres(cluster.standby.url, { max: 1, onnotice: () => {} })
    try {
      const [row] = await standbySql`select pg_last_xact_replay_timestamp() is null as none`
      replayedNone = row?.none === true
    } finally {
      await standbySql.end({ timeout: 1 })
    }
  }
  // The precondition: nothing replayed since the restart.
  expect(replayedNone).toBe(true)
  await notes.primarySql`insert into notes (body) values ('written while the replica is held back')`

  const instance = Fastify()
  app = instance
  await instance.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: { lagInterval: 50, maxLag: { seconds: 600 } },
    pool: { max: 2 },
  })
  await instance.register(pgPoolHealth, { cacheTime: 0 })
  await instance.ready()
  const replica = instance.pgPools.all()[1]
  await waitUntil(
    () => {
      const lag = replica?.replica()?.lag
      return lag !== undefined && lag.error === undefined && lag.bytes > 0
    },
    'a lag sample of the replica with the primary known',
    20_000,
  )
  expect(replica?.replica()?.lag?.seconds).toBe(Number.POSITIVE_INFINITY)

  const ready = await instance.inject('/health/ready')
  expect(ready.statusCode).toBe(200)
  const body = ready.json()
  const [check] = body.checks['postgres:replicationLag']
  expect(check.observedValue).toBe(null)
  expect(check.bytes).toBeGreaterThan(0)
  expect(ready.body).not.toContain('Infinity')
  expect(check.output).toMatch(/^replica lagging: \d+ bytes behind, for a time not known \(maxLag 600 s\)/)
}, 120_000)

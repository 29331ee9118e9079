// DEFECT (probe-replicas, medium). What the user does: runs a replica on a primary that was quiet
// for a while (no commit for longer than maxLag.seconds: nights, a staging system, a low-traffic
// service), then the primary writes WAL that commits nothing yet: a bulk load or a long data
// migration in one transaction, CREATE INDEX, VACUUM. What they should get: the replica keeps its
// reads: it has every committed row the primary has (`maxLag.seconds` bounds how old the data a
// read may see is), and pg_pool_replica_lag_seconds says it is about current. What they got: the
// replica is a few WAL bytes behind at each sample, and the monitor's seconds of lag is then the
// age of the last commit it replayed (`now() - pg_last_xact_replay_timestamp()`), that is how long
// the primary had been quiet: the replica read as 7 s behind (maxLag 6 s) the moment the
// transaction wrote, unusable: every read went to the primary (`lagging`), health warned, the lag
// gauge showed the idle time. Measured without pausing replay: an 11 s bulk insert on a primary
// quiet for 6 s made a streaming standby (caught up within milliseconds) unusable in 106 of 109
// checks, "17 s behind". Replay is paused here to hold the replica those few bytes behind
// deterministically; nothing is committed past what it replayed. Fix (replica-monitor.ts): a
// replica seen at or behind a primary position P read at time t, and at or past P since, has every
// commit made before t: its seconds of lag are at most now - t (whichever is smaller with the last
// replayed commit's age). With the fix the same bulk insert left the standby usable in every check.
// Unit side, on a fake clock: lag-bound-fake-clock.test.ts.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'
import { waitUntil } from '../../../support/database.js'
import { useNotesCluster } from '../../../support/notes-cluster.js'

const notes = useNotesCluster('probe_lag_idle_time')
const MAX_LAG_SECONDS = 6

describe('seconds of lag after a quiet spell', () => {
  test('a transaction that writes but has not committed leaves the replica usable', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: notes.database.primaryUrl,
      replicas: [notes.database.standbyUrls[0] as string],
      replica: { lagInterval: 50, maxLag: { seconds: MAX_LAG_SECONDS } },
      pool: { max: 2 },
    })
    app.get('/notes', { config: { db: { readOnly: true } } }, async (request) => {
      const [row] = await request.db`select pg_is_in_recovery() as standby, count(*)::int as notes from notes`
      return row
    })
    const fallbacks: string[] = []
    app.pgPool.on('readFallback', (reason) => fallbacks.push(reason))
    const writer = await notes.primarySql.reserve()
    try {
      await app.ready()
      const replica = app.pgPools.all()[1]
      await notes.primarySql`insert into notes (body) values ('the last commit for a while')`
      await notes.cluster.waitForReplay(notes.cluster.standby)
      await waitUntil(() => replica?.replica()?.usable === true, 'the replica to be usable', 10_000)
      // Quiet for longer than maxLag: caught up, no lag (bytes 0).
      await new Promise((resolve) => setTimeout(resolve, (MAX_LAG_SECONDS + 1) * 1_000))
      expect(replica?.replica()).toMatchObject({ usable: true, lag: { bytes: 0, seconds: 0 } })
      const [{ committed } = { committed: -1 }] = await notes.primarySql<
        { committed: number }[]
      >`select count(*)::int as committed from notes`

      await notes.cluster.pauseReplay(notes.cluster.standby)
      await writer`begin`
      await writer`insert into notes (body) select 'not committed yet' from generate_series(1, 2000)`
      // The WAL of the open transaction is written out (walwriter) and sampled.
      await waitUntil(() => (replica?.replica()?.lag?.bytes ?? 0) > 0, 'the primary to be past the replica', 10_000)
      const state = replica?.replica()
      // Before the fix: { usable: false, lag: { seconds: 7.1, ... } }: the quiet spell as lag.
      expect(state?.lag?.seconds).toBeLessThan(MAX_LAG_SECONDS)
      expect(state?.usable).toBe(true)
      expect((await app.inject('/notes')).json()).toEqual({ standby: true, notes: committed })
      expect(fallbacks).toEqual([])
    } finally {
      await writer`rollback`.catch(() => {})
      writer.release()
      await app.close()
    }
  })
})

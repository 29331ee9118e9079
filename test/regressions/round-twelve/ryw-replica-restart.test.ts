import { appendFile } from 'node:fs/promises'
import { join } from 'node:path'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../../support/database.js'
import { type NotesCluster, startNotesCluster } from '../../support/replication.js'

// DEFECT (read-your-writes broken after a replica crash-restart).
//
// What the user does: replicas with `replica.readYourWrites`, reads bounded by WAL bytes only
// (`maxLag: { bytes }`, documented: "{ bytes: 16e6 } alone bounds WAL bytes only"). A client
// writes (POST), gets its token; the replica replays the write. The replica then crashes (OOM
// killer, node reboot: an immediate shutdown) and restarts. A hot standby accepts reads as soon
// as it reaches its consistency point (its minRecoveryPoint), which can be *before* what it had
// replayed when it crashed; it then replays forward again (here held by recovery_min_apply_delay,
// which PostgreSQL applies only once consistent; in production, minutes of WAL since the last
// restartpoint, or a replica rebuilt from an older base backup behind the same URL).
//
// What they see: the client's read with its token is routed to the restarted replica, which no
// longer shows the write: 200 `{ found: false }`, a stale read.
// What they should see (docs/replicas.md, Read-your-writes): "a client that sends back the token
// of its last write reads that write or something newer, from any replica or the primary".
//
// Cause: packages/core/src/replica-monitor.ts:124 (`if (replay > this.#replayed[index])
// this.#replayed[index] = replay`, the same in #poll, :216) keeps the highest replay position ever
// seen for a replica and never lowers it, and replica-router.ts:62 / replica-monitor.ts:180
// (`replayed(index) >= lsn`) trust that maximum. The monitor's own samples after the restart
// show the lower position (view.replica().lag.replayLsn), but routing ignores them.
// Suggested fix: set #replayed[index] to the sampled position (not a running max) on each
// successful sample and poll (or lower it after a failed sample / reconnection), so that a
// replica whose replay went backwards is judged by what it shows now.

let notes: NotesCluster
let app: FastifyInstance
const HEADER = 'x-pg-read-after'
const fallbacks: string[] = []

const lsnValue = (text: string): bigint => {
  const [hi = '0', lo = '0'] = text.split('/')
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`)
}

beforeAll(async () => {
  notes = await startNotesCluster('probe_ryw_restart')
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: {
      lagInterval: 50,
      maxLag: { bytes: 64e6 },
      readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: 300 },
    },
    pool: { max: 4, connectTimeout: 2_000 },
  })
  app.post('/notes', async (request) => {
    const [row] = await request.db`insert into notes (body) values ('mine') returning id`
    return row
  })
  app.get('/notes/:id', { config: { db: { readOnly: true } } }, async (request) => {
    const id = Number((request.params as { id: string }).id)
    const [row] = await request.db<{ found: boolean; standby: boolean }[]>`
      select exists (select 1 from notes where id = ${id}) as found, pg_is_in_recovery() as standby`
    return row
  })
  app.pgPool.on('readFallback', (reason) => fallbacks.push(reason))
  await app.ready()
  await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 20_000)
}, 120_000)

afterAll(async () => {
  await app?.close()
  await notes?.destroy()
})

describe('read-your-writes across a replica crash-restart', () => {
  test('a token read after the replica restarted behind the write still sees the write', async () => {
    const { cluster, primarySql } = notes
    const { standby } = cluster
    // The standby's restart point and consistency point before the write: a checkpoint replayed
    // from the primary, then a restartpoint on the standby.
    await primarySql`checkpoint`
    await cluster.waitForReplay(standby)
    const standbySql = postgres(notes.database.standbyUrls[0] as string, { max: 1, onnotice: () => {} })
    try {
      await standbySql`checkpoint`
    } finally {
      await standbySql.end({ timeout: 1 })
    }

    const written = await app.inject({ method: 'POST', url: '/notes' })
    expect(written.statusCode).toBe(200)
    const id = (written.json() as { id: number }).id
    const token = String(written.headers[HEADER])
    const tokenLsn = lsnValue(token.split('.')[0] as string)
    await cluster.waitForReplay(standby)
    // Control: the replica has the write and serves the token read.
    await waitUntil(
      async () => {
        const reply = (await app.inject({ url: `/notes/${id}`, headers: { [HEADER]: token } })).json()
        return reply.found === true && reply.standby === true
      },
      'the replica to serve the token read',
      10_000,
    )

    const probe = postgres(notes.database.standbyUrls[0] as string, { max: 1, onnotice: () => {} })
    const [control] = await probe<
      { min: string }[]
    >`select min_recovery_end_lsn::text as min from pg_control_recovery()`
    await probe.end({ timeout: 1 })

    // The crash, and a restart that holds replay at the consistency point.
    await standby.kill()
    await appendFile(join(standby.dataDir, 'postgresql.auto.conf'), "recovery_min_apply_delay = '1h'\n")
    await standby.start()
    const standbyNow = postgres(notes.database.standbyUrls[0] as string, { max: 1, onnotice: () => {} })
    try {
      // Precondition: the restarted replica does not show the write (its consistency point was
      // before it), a standby still.
      const rows = await standbyNow`select id from notes where id = ${id}`
      const [state] = await standbyNow<{ replay: string; recovery: boolean }[]>`
        select pg_last_wal_replay_lsn()::text as replay, pg_is_in_recovery() as recovery`
      expect(
        { rows: rows.length, recovery: state?.recovery },
        `min_recovery_end_lsn before the crash ${control?.min}`,
      ).toEqual({ rows: 0, recovery: true })
      expect(lsnValue(state?.replay as string) < tokenLsn).toBe(true)

      // The monitor has sampled the restarted replica: usable, its replay position behind the token.
      await waitUntil(
        () => {
          const replica = app.pgPools.all()[1]?.replica()
          return replica?.usable === true && replica.lag !== undefined && lsnValue(replica.lag.replayLsn) < tokenLsn
        },
        'the monitor to sample the restarted replica',
        20_000,
      )

      fallbacks.length = 0
      const read = await app.inject({ url: `/notes/${id}`, headers: { [HEADER]: token } })
      expect(read.statusCode).toBe(200)
      // The write must be seen: from the primary (behind_write) or a replica that has it. Seen:
      // { found: false, standby: true }, no fallback.
      expect({ ...read.json(), fallbacks }).toEqual({
        found: true,
        standby: expect.any(Boolean),
        fallbacks: expect.any(Array),
      })
    } finally {
      await standbyNow`alter system reset recovery_min_apply_delay`
      await standbyNow`select pg_reload_conf()`
      await standbyNow.end({ timeout: 1 })
    }
  })
})

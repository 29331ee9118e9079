// DEFECT (probe-storm, medium). What the user does: read replicas with read-your-writes and a
// `maxWait` sized for their replicas' lag (8 s here; the option takes any duration), `closeTimeout`
// 1 s (the default is 10 s: the same with maxWait 30 s). A client's token read waits for a replica
// behind its write (replay paused here; any lag, a replica stuck in recovery, in production), and
// the app is shut down (SIGTERM -> app.close()) meanwhile.
// What they see: app.close() does not end within closeTimeout: it waits until each waiting read's
// maxWait has run out (~7.7 s after close with closeTimeout 1 s), then each read answers 503
// FST_PG_POOL_CLOSED. A pod's termination grace period can run out first (SIGKILL, every other
// request in flight cut).
// What they should see: core README, `closeTimeout`: "on app.close(), how long to wait for leases
// before cancelling statements and closing connections": the waiting reads answered (503 CLOSED,
// or served by the primary) at closeTimeout at the latest, close() resolved then.
// Cause: packages/core/src/plugin.ts:395-398: at closeTimeout the preClose timer ends the units
// (`unit.end(0)`), but a read waiting in ReplicaRouter.routeAfter (replica-router.ts:90) ->
// ReplicaMonitor.waitReplayed (replica-monitor.ts:182) is not a lease of any unit yet and checks
// only `#stopped`, which monitor.stop() sets in onClose (plugin.ts:412) - and Fastify runs onClose
// only once the requests in flight (these reads) have ended. Suggested fix: stop the monitor's waits
// in preClose (a closing app has no reason to wait for replay: send the read to the primary) or at
// least in the closeTimeout timer, e.g. `closeTimer = setTimeout(() => { monitor?.stop(); ... })`.
// Round thirteen: failed on 47cd02d (both servers, probe-storm); passes after 17975c0.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { sleep, uniqueName, waitFor, waitUntil } from '../../support/database.js'
import { listen } from '../../support/http.js'
import { type NotesCluster, startNotesCluster } from '../../support/replication.js'

let notes: NotesCluster
const HEADER = 'x-pg-read-after'
failOnProcessErrors()

beforeAll(async () => {
  notes = await startNotesCluster('probe_storm_closewait')
}, 120_000)

afterAll(async () => {
  await notes?.cluster.resumeReplay(notes.cluster.standby).catch(() => {})
  await notes?.destroy()
})

async function build(name: string): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: {
      // A sample a second: with 50 ms, a late sample on a loaded machine made the replica stale
      // and the reads went to the primary at once (failed once under load).
      lagInterval: 1_000,
      maxLag: { seconds: 600 },
      readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: 8_000 },
    },
    pool: { max: 3, applicationName: name, closeTimeout: 1_000 },
  })
  app.post('/notes', async (request) => {
    const [row] = await request.db<{ id: number }[]>`insert into notes (body) values ('mine') returning id`
    return row
  })
  app.get('/notes/:id', { config: { db: { readOnly: true } } }, async (request) => {
    const id = Number((request.params as { id: string }).id)
    const [row] = await request.db<{ found: boolean; standby: boolean }[]>`
      select exists (select from notes where id = ${id}) as found, pg_is_in_recovery() as standby`
    return row
  })
  await app.ready()
  await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 20_000)
  return app
}

async function backends(name: string): Promise<number> {
  let n = 0
  for (const url of [notes.database.primaryUrl, notes.database.standbyUrls[0] as string]) {
    const sql = postgres(url, { max: 1, onnotice: () => {} })
    const [row] = await sql<
      { n: number }[]
    >`select count(*)::int as n from pg_stat_activity where application_name = ${name}`
    n += row?.n ?? 0
    await sql.end({ timeout: 1 })
  }
  return n
}

describe('token reads waiting for replay when the app closes', () => {
  test('app.close() with token reads waiting for replay: close ends within closeTimeout, not maxWait', async () => {
    const name = uniqueName('closewait')
    const app = await build(name)
    const base = await listen(app)
    await notes.cluster.pauseReplay(notes.cluster.standby)
    try {
      const w = await app.inject({ method: 'POST', url: '/notes' })
      const id = (w.json() as { id: number }).id
      const token = String(w.headers[HEADER])
      let closeStarted = 0
      const reads = Array.from({ length: 4 }, () =>
        fetch(`${base}/notes/${id}`, { headers: { [HEADER]: token } }).then(
          async (r) => ({
            status: r.status,
            code: ((await r.json()) as { code?: string }).code,
            afterClose: Date.now() - closeStarted,
          }),
          (e) => ({ status: 'error', code: String(e), afterClose: Date.now() - closeStarted }),
        ),
      )
      // The reads wait for the paused replica (maxWait 8 s).
      await sleep(300)
      closeStarted = Date.now()
      await app.close()
      const closedAfter = Date.now() - closeStarted
      const answers = await Promise.all(reads)
      // closeTimeout is 1 s: a huge bound (5 s) still well under maxWait (8 s). Seen: close took
      // ~7.7 s, each read answered 503 FST_PG_POOL_CLOSED only when its maxWait ran out.
      expect(
        { closedWithin5s: closedAfter < 5_000, closedAfter, answers },
        JSON.stringify({ closedAfter, answers }),
      ).toMatchObject({
        closedWithin5s: true,
        answers: Array(4).fill({ status: 503, code: 'FST_PG_POOL_CLOSED', afterClose: expect.any(Number) }),
      })
      expect(answers.every((a) => a.afterClose < 5_000)).toBe(true)
      expect(await waitFor(async () => (await backends(name)) === 0, 5_000)).toBe(true)
    } finally {
      await notes.cluster.resumeReplay(notes.cluster.standby)
      await app.close()
    }
  })
})

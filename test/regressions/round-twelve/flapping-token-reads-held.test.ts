import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../../support/database.js'
import { freeze } from '../../support/freeze-node.js'
import { type NotesCluster, startNotesCluster } from '../../support/replication.js'

// HOLDS: a replica that flaps (stopped and started again, three times) while token-bearing reads
// wait for it (its replay paused behind their write): every waiting read answers 200 with its
// write (from the primary, behind_write), none hangs (each well within a generous bound, maxWait
// being 1.5 s), no lease is left out; after each start the replica is sampled back into routing
// and serves reads again. Also a replica FROZEN (SIGSTOP, every process) while token reads wait
// on it: the shared replay poll hangs, each read still gives up at maxWait and is answered by the
// primary with its write; after the thaw the replica is sampled back. Not covered elsewhere: the
// existing stop/freeze tests have no read waiting in waitReplayed on the replica.

let notes: NotesCluster
let app: FastifyInstance
const HEADER = 'x-pg-read-after'
const MAX_WAIT = 1_500
const fallbacks: string[] = []

beforeAll(async () => {
  notes = await startNotesCluster('probe_flapping')
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: {
      lagInterval: 50,
      maxLag: { seconds: 600 },
      readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: MAX_WAIT },
    },
    pool: { max: 4, connectTimeout: 2_000 },
  })
  app.post('/notes', async (request) => {
    const [row] = await request.db<{ id: number }[]>`insert into notes (body) values ('mine') returning id`
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
  if (notes !== undefined && !notes.cluster.standby.running) await notes.cluster.standby.start().catch(() => {})
  await notes?.destroy()
})

describe('a flapping replica with token reads waiting on it', () => {
  test('three stop/start cycles: every waiting read sees its write, none hangs, the replica comes back', async () => {
    const { cluster } = notes
    for (let cycle = 0; cycle < 3; cycle++) {
      await cluster.pauseReplay(cluster.standby)
      const written = await app.inject({ method: 'POST', url: '/notes' })
      expect(written.statusCode).toBe(200)
      const id = (written.json() as { id: number }).id
      const token = String(written.headers[HEADER])
      fallbacks.length = 0
      const started = Date.now()
      const reads = Array.from({ length: 6 }, () =>
        app.inject({ url: `/notes/${id}`, headers: { [HEADER]: token } }).then((reply) => ({
          status: reply.statusCode,
          found: (reply.json() as { found?: boolean }).found,
          ms: Date.now() - started,
        })),
      )
      // The reads are waiting for the paused replica (none has answered: maxWait is 1.5 s).
      await new Promise((resolve) => setTimeout(resolve, 100))
      await cluster.standby.stop()
      const answers = await Promise.all(reads)
      for (const answer of answers) {
        expect({ status: answer.status, found: answer.found }).toEqual({ status: 200, found: true })
        // No hang: a generous bound (maxWait + sample bound + connect timeout, with slack).
        expect(answer.ms).toBeLessThan(20_000)
      }
      expect(fallbacks.length).toBeGreaterThanOrEqual(answers.length)
      for (const view of app.pgPools.all()) expect(view.stats()).toMatchObject({ leased: 0, waiting: 0 })

      // Back: replay resumes with the restart (a pause does not survive it); sampled usable again.
      await cluster.standby.start()
      await cluster.waitForReplay(cluster.standby)
      await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable again', 20_000)
      const again = await app.inject({ url: `/notes/${id}`, headers: { [HEADER]: token } })
      expect(again.json()).toEqual({ found: true, standby: true })
    }
  })

  test('frozen while token reads wait on it: each answers with its write, none hangs; back after the thaw', async () => {
    const { cluster } = notes
    await cluster.pauseReplay(cluster.standby)
    const written = await app.inject({ method: 'POST', url: '/notes' })
    expect(written.statusCode).toBe(200)
    const id = (written.json() as { id: number }).id
    const token = String(written.headers[HEADER])
    const started = Date.now()
    const reads = Array.from({ length: 6 }, () =>
      app.inject({ url: `/notes/${id}`, headers: { [HEADER]: token } }).then((reply) => ({
        status: reply.statusCode,
        found: (reply.json() as { found?: boolean }).found,
        ms: Date.now() - started,
      })),
    )
    await new Promise((resolve) => setTimeout(resolve, 100))
    const thaw = freeze(cluster, cluster.standby)
    try {
      const answers = await Promise.all(reads)
      for (const answer of answers) {
        expect({ status: answer.status, found: answer.found }).toEqual({ status: 200, found: true })
        expect(answer.ms).toBeLessThan(20_000)
      }
      for (const view of app.pgPools.all()) expect(view.stats()).toMatchObject({ leased: 0, waiting: 0 })
    } finally {
      thaw()
    }
    await cluster.resumeReplay(cluster.standby)
    await cluster.waitForReplay(cluster.standby)
    await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable again', 20_000)
    const again = await app.inject({ url: `/notes/${id}`, headers: { [HEADER]: token } })
    expect(again.json()).toEqual({ found: true, standby: true })
  })
})

import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { type NotesCluster, startNotesCluster } from '../support/replication.js'

// HOLDS:
// - a "replica" that is in fact a primary (misconfiguration: replicas: [the primary's URL]) never
//   serves reads as a replica: 'not a standby', reads go to the primary read-only, a write in a
//   read-only route is refused (25006), health warns (docs/replicas.md: "still a standby
//   (pg_is_in_recovery())").
// - app.close() while token-bearing reads wait for a paused replica (maxWait 5 s): every read
//   answers, close does not wait for maxWait, and no lease is left out.

let notes: NotesCluster

beforeAll(async () => {
  notes = await startNotesCluster('probe_replica_role')
}, 120_000)

afterAll(async () => {
  await notes?.destroy()
})

describe('replica roles', () => {
  test('a replica URL naming the primary: never used as a replica', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: notes.database.primaryUrl,
      replicas: [notes.database.primaryUrl],
      replica: { lagInterval: 50 },
      pool: { max: 2 },
    })
    await app.register(pgPoolHealth)
    app.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
      const [row] = await request.db`select current_setting('transaction_read_only') as ro`
      return row
    })
    app.post(
      '/write-in-read',
      { config: { db: { readOnly: true } } },
      async (request) => request.db`insert into notes (body) values ('nope')`,
    )
    const fallbacks: string[] = []
    app.pgPool.on('readFallback', (reason) => fallbacks.push(reason))
    try {
      await app.ready()
      const replica = app.pgPools.all()[1]
      expect(replica?.replica()).toMatchObject({ usable: false, lag: { error: 'not a standby' } })
      expect((await app.inject('/where')).json()).toEqual({ ro: 'on' })
      expect((await app.inject({ method: 'POST', url: '/write-in-read' })).json().code).toBe('25006')
      // (The reason is 'no_replica' here: see fallback-reason.test.ts.)
      expect(fallbacks).toHaveLength(2)
      const ready = await app.inject('/health/ready')
      expect(ready.statusCode).toBe(200)
      expect(ready.json().status).toBe('warn')
    } finally {
      await app.close()
    }
  })

  test('close while token reads wait for a paused replica', async () => {
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: notes.database.primaryUrl,
      replicas: [notes.database.standbyUrls[0] as string],
      replica: {
        lagInterval: 50,
        maxLag: { seconds: 600 },
        readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: 5_000 },
      },
      pool: { max: 2, closeTimeout: 1_000 },
    })
    app.post('/notes', async (request) => (await request.db`insert into notes (body) values ('x') returning id`)[0])
    app.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
      const [row] = await request.db`select 1 as one`
      return row
    })
    await app.ready()
    await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
    await notes.cluster.pauseReplay(notes.cluster.standby)
    try {
      const token = String((await app.inject({ method: 'POST', url: '/notes' })).headers['x-pg-read-after'])
      const reads = Array.from({ length: 10 }, () =>
        app.inject({ url: '/where', headers: { 'x-pg-read-after': token } }),
      )
      await new Promise((resolve) => setTimeout(resolve, 200))
      const started = Date.now()
      await app.close()
      const took = Date.now() - started
      const replies = await Promise.all(reads)
      expect(took).toBeLessThan(4_000)
      for (const reply of replies) expect([200, 503]).toContain(reply.statusCode)
      for (const view of app.pgPools.all()) expect(view.stats()).toMatchObject({ leased: 0, waiting: 0 })
    } finally {
      await notes.cluster.resumeReplay(notes.cluster.standby)
    }
  })
})

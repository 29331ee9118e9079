// HELD (probe-storm): pipelined read-only routes and tokens: with the replica's one connection shared
// by slow pipelined reads (no token) and its replay paused, token reads of the same route do not
// join that shared replica connection; each is answered by the primary with its write.
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { sleep, waitUntil } from '../../support/database.js'
import { type NotesCluster, startNotesCluster } from '../../support/replication.js'

let notes: NotesCluster
let app: FastifyInstance
const HEADER = 'x-pg-read-after'
const fallbacks: string[] = []

beforeAll(async () => {
  notes = await startNotesCluster('probe_storm_pipejoin')
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [{ connection: notes.database.standbyUrls[0] as string, pool: { max: 1 } }],
    replica: {
      lagInterval: 50,
      maxLag: { seconds: 600 },
      readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: 300 },
    },
    pool: { max: 3, pipelineDepth: 8 },
  })
  app.post('/notes', async (request) => {
    const [row] = await request.db<{ id: number }[]>`insert into notes (body) values ('mine') returning id`
    return row
  })
  app.get('/slow', { config: { db: { readOnly: true, pipeline: true } } }, async (request) => {
    const [row] = await request.db<{ standby: boolean }[]>`select pg_sleep(1.5), pg_is_in_recovery() as standby`
    return row
  })
  app.get('/notes/:id', { config: { db: { readOnly: true, pipeline: true } } }, async (request) => {
    const id = Number((request.params as { id: string }).id)
    const [row] = await request.db<{ found: boolean; standby: boolean }[]>`
      select exists (select from notes where id = ${id}) as found, pg_is_in_recovery() as standby`
    return row
  })
  app.pgPool.on('readFallback', (reason) => void fallbacks.push(reason))
  await app.ready()
  await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 20_000)
}, 120_000)

afterAll(async () => {
  await notes?.cluster.resumeReplay(notes.cluster.standby).catch(() => {})
  await app?.close()
  await notes?.destroy()
})

describe('pipelined read-only: a token read that could join a shared replica connection', () => {
  test('joins only if the replica has its write; else the primary answers with it', async () => {
    const { cluster } = notes
    await cluster.pauseReplay(cluster.standby)
    try {
      const w = await app.inject({ method: 'POST', url: '/notes' })
      const id = (w.json() as { id: number }).id
      const token = String(w.headers[HEADER])
      // Replica's one connection shared by slow pipelined reads (no token).
      const slow = Array.from({ length: 3 }, () => app.inject({ url: '/slow' }))
      await sleep(200)
      const reads = await Promise.all(
        Array.from({ length: 4 }, () => app.inject({ url: `/notes/${id}`, headers: { [HEADER]: token } })),
      )
      const slowAnswers = (await Promise.all(slow)).map((r) => r.json())
      expect({ reads: reads.map((r) => r.json()), slowAnswers }).toEqual({
        reads: Array(4).fill({ found: true, standby: false }),
        slowAnswers: Array(3).fill({ pg_sleep: '', standby: true }),
      })
    } finally {
      await cluster.resumeReplay(cluster.standby)
    }
  })
})

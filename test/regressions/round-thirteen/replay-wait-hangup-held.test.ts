// HELD (probe-storm): clients that hang up while their token reads wait (maxWait 8 s) for a
// replica behind their write: every lease comes back at once (none waits out maxWait), and a later
// token read is served normally. The same with handlerTimeout (300 ms) firing during the wait:
// Fastify's 503, no lease left, nothing of the app on either server after close.
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
      lagInterval: 50,
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
  app.get('/notes-ht/:id', { config: { db: { readOnly: true } }, handlerTimeout: 300 }, async (request) => {
    const id = Number((request.params as { id: string }).id)
    const [row] = await request.db<{ found: boolean }[]>`select exists (select from notes where id = ${id}) as found`
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

describe('token reads waiting for replay when the client leaves', () => {
  test('clients hang up while their reads wait: the leases come back at once', async () => {
    const name = uniqueName('hangwait')
    const app = await build(name)
    const base = await listen(app)
    await notes.cluster.pauseReplay(notes.cluster.standby)
    try {
      const w = await app.inject({ method: 'POST', url: '/notes' })
      const id = (w.json() as { id: number }).id
      const token = String(w.headers[HEADER])
      const controllers = Array.from({ length: 5 }, () => new AbortController())
      const reads = controllers.map((c) =>
        fetch(`${base}/notes/${id}`, { headers: { [HEADER]: token }, signal: c.signal }).then(
          async (r) => ({ status: r.status, found: ((await r.json()) as { found?: boolean }).found }),
          () => 'aborted' as const,
        ),
      )
      await sleep(300)
      for (const c of controllers) c.abort()
      // Each read waits for replay until its client leaves; on a loaded machine the replica monitor
      // may judge the standby unusable meanwhile (a sample past its time), and a read then goes to
      // the primary: answered, and with the write (read-your-writes holds either way).
      const outcomes = await Promise.all(reads)
      expect(outcomes.filter((o) => o !== 'aborted' && !(o.status === 200 && o.found === true))).toEqual([])
      const idle = await waitFor(
        () => app.pgPools.all().every((v) => v.stats().leased === 0 && v.stats().waiting === 0),
        3_000,
      )
      expect({ idle, stats: app.pgPools.all().map((v) => v.stats()) }).toMatchObject({ idle: true })
      // A fresh token read still works.
      await notes.cluster.resumeReplay(notes.cluster.standby)
      const again = await app.inject({ url: `/notes/${id}`, headers: { [HEADER]: token } })
      expect(again.json()).toMatchObject({ found: true })
    } finally {
      await notes.cluster.resumeReplay(notes.cluster.standby)
      await app.close()
    }
    expect(await waitFor(async () => (await backends(name)) === 0, 5_000)).toBe(true)
  })

  test('handlerTimeout while token reads wait: Fastify answers 503, the leases come back, nothing runs after', async () => {
    const name = uniqueName('htwait')
    const app = await build(name)
    await notes.cluster.pauseReplay(notes.cluster.standby)
    try {
      const w = await app.inject({ method: 'POST', url: '/notes' })
      const id = (w.json() as { id: number }).id
      const token = String(w.headers[HEADER])
      const answers = await Promise.all(
        Array.from({ length: 4 }, () =>
          app.inject({ url: `/notes-ht/${id}`, headers: { [HEADER]: token } }).then((r) => ({
            status: r.statusCode,
            code: (r.json() as { code?: string }).code,
          })),
        ),
      )
      expect(answers).toEqual(Array(4).fill({ status: 503, code: 'FST_ERR_HANDLER_TIMEOUT' }))
      const idle = await waitFor(
        () => app.pgPools.all().every((v) => v.stats().leased === 0 && v.stats().waiting === 0),
        3_000,
      )
      expect({ idle, stats: app.pgPools.all().map((v) => v.stats()) }).toMatchObject({ idle: true })
    } finally {
      await notes.cluster.resumeReplay(notes.cluster.standby)
      await app.close()
    }
    expect(await waitFor(async () => (await backends(name)) === 0, 5_000)).toBe(true)
  })
})

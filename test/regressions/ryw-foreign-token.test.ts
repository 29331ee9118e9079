import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { type NotesCluster, startNotesCluster } from '../support/replication.js'

// Found by hostile probing (round 8, remote clients; failed before the fix). docs/replicas.md,
// Read-your-writes 3.: "A missing, malformed or forged token is ignored (the read goes by lag
// alone), so a client cannot pin its reads, or anyone's, on the primary with a made-up position."
// The HMAC covered the LSN text only: an app with two instances on two servers, both given the one
// secret (`process.env.RYW_SECRET`, as the README has it), accepted the second's token under the
// first's header. Its position, one the first cluster never wrote, made each read of that client
// wait `maxWait` and go to the primary (`behind_write`). The signature covers the instance's
// primary (host:port/database) now.

const SECRET = 'one-ryw-secret-for-the-whole-app'
const MAX_WAIT = 1_500

let notes: NotesCluster
let other: TestDatabase
let app: FastifyInstance
const fallbacks: string[] = []

const lsnValue = (text: string): bigint => {
  const [hi = '0', lo = '0'] = text.split('/')
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`)
}

beforeAll(async () => {
  notes = await startNotesCluster('probe_remote_foreign')
  other = await createTestDatabase()
  await other.sql`create table events (id serial primary key, body text)`
  // The other cluster's WAL position must be past this cluster's (the case of any two clusters
  // of different age): push it forward (a segment at a time) when it is not.
  const mine = lsnValue(await notes.cluster.currentLsn())
  for (let i = 0; i < 8; i++) {
    const [{ lsn }] = (await other.admin`select pg_current_wal_lsn()::text as lsn`) as unknown as [{ lsn: string }]
    if (lsnValue(lsn) > mine + 1024n * 1024n) break
    await other.sql`insert into events (body) values ('wal')`
    await other.admin`select pg_switch_wal()`
  }

  app = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: { lagInterval: 50, maxLag: { seconds: 600 }, readYourWrites: { secret: SECRET, maxWait: MAX_WAIT } },
    pool: { max: 4 },
  })
  await app.register(pgPoolCore, {
    name: 'events',
    connection: other.url,
    replica: { readYourWrites: { secret: SECRET, header: 'x-events-read-after' } },
    pool: { max: 2 },
  })
  app.post('/events', async (request) => {
    const dbs = request.dbs as Record<string, typeof request.db>
    const [row] = await (dbs.events as typeof request.db)`insert into events (body) values ('x') returning id`
    return row
  })
  app.post('/notes', async (request) => {
    const [row] = await request.db`insert into notes (body) values ('mine') returning id`
    return row
  })
  app.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db`select pg_is_in_recovery() as standby`
    return row
  })
  app.pgPool.on('readFallback', (reason) => fallbacks.push(reason))
  await app.ready()
  await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 20_000)
}, 120_000)

afterAll(async () => {
  await app?.close()
  await other?.drop()
  await notes?.destroy()
})

describe("a read-your-writes token of another instance, sent under this instance's header", () => {
  test('is honoured here (control): a real token of this instance reads from the replica once replayed', async () => {
    const wrote = await app.inject({ method: 'POST', url: '/notes' })
    const token = wrote.headers['x-pg-read-after'] as string
    expect(token).toMatch(/^[0-9A-F]+\/[0-9A-F]+\./)
    const read = await app.inject({ url: '/where', headers: { 'x-pg-read-after': token } })
    expect(read.json()).toEqual({ standby: true })
  })

  test('is ignored: the read goes by lag alone (the replica), at once', async () => {
    const wrote = await app.inject({ method: 'POST', url: '/events' })
    expect(wrote.statusCode).toBe(200)
    const foreign = wrote.headers['x-events-read-after'] as string
    expect(foreign, 'the events instance hands out its token').toMatch(/^[0-9A-F]+\/[0-9A-F]+\./)
    // A position this cluster never wrote: the token is no write of this instance.
    expect(lsnValue(foreign.split('.')[0] as string)).toBeGreaterThan(lsnValue(await notes.cluster.currentLsn()))

    fallbacks.length = 0
    const results: { standby: unknown; ms: number }[] = []
    for (let i = 0; i < 3; i++) {
      const started = Date.now()
      const read = await app.inject({ url: '/where', headers: { 'x-pg-read-after': foreign } })
      results.push({ standby: read.json().standby, ms: Date.now() - started })
    }
    // Each read waited maxWait and was served by the primary.
    expect(
      { standby: results.map((r) => r.standby), fallbacks },
      `reads took ${results.map((r) => r.ms).join(', ')} ms`,
    ).toEqual({
      standby: [true, true, true],
      fallbacks: [],
    })
  })
})

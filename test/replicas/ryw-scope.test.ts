// Found by hostile probing (round 8, second round against a4e7cd0; the `db`, `hostname` and
// two-servers cases failed before the fix): tokens were signed for the primary as its options
// spelled it (host:port/database), and the `hostname`/`db` keys postgres.js reads were not read:
// two servers spelled that way took each other's tokens, and one primary spelled two ways did not
// take its own (a read-your-writes miss). The scope is the instance's name and database now, and
// `hostname`/`db` are read as postgres.js reads them.
import pgPoolCore, { type PgPoolCoreOptions } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitUntil } from '../support/database.js'
import { type NotesCluster, startNotesCluster } from '../support/replication.js'

const SECRET = 'one-ryw-secret-for-all-the-pods'
const MAX_WAIT = 1_500
const HEADER = 'x-pg-read-after'

let notes: NotesCluster
let other: TestDatabase
const apps: FastifyInstance[] = []

const lsnValue = (text: string): bigint => {
  const [hi = '0', lo = '0'] = text.split('/')
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`)
}

function parts(url: string) {
  const u = new URL(url)
  return {
    host: u.hostname,
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1),
  }
}

async function notesApp(connection: PgPoolCoreOptions['connection'], fallbacks?: string[]): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(pgPoolCore, {
    connection,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: { lagInterval: 50, maxLag: { seconds: 600 }, readYourWrites: { secret: SECRET, maxWait: MAX_WAIT } },
    pool: { max: 3 },
  })
  app.post('/notes', async (request) => {
    const [row] = await request.db`insert into notes (body) values ('mine') returning id`
    return row
  })
  app.get('/notes/:id', { config: { db: { readOnly: true } } }, async (request) => {
    const id = Number((request.params as { id: string }).id)
    const [row] = await request.db`select id, pg_is_in_recovery() as standby from notes where id = ${id}`
    return { found: row !== undefined }
  })
  app.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db`select pg_is_in_recovery() as standby`
    return row
  })
  if (fallbacks) app.pgPool.on('readFallback', (reason) => fallbacks.push(reason))
  await app.ready()
  await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 20_000)
  apps.push(app)
  return app
}

let writer: FastifyInstance
beforeAll(async () => {
  notes = await startNotesCluster('probe_close2_scope')
  other = await createTestDatabase()
  writer = await notesApp(notes.database.primaryUrl)
}, 120_000)

afterEach(async () => {
  await notes.cluster.resumeReplay(notes.cluster.standby).catch(() => {})
})

afterAll(async () => {
  for (const app of apps) await app.close()
  await other?.drop()
  await notes?.destroy()
})

/** Replay paused: a write on `writer`, its token sent to `reader`. True when the read saw the write. */
async function readsOwnWrite(reader: FastifyInstance): Promise<{ found: boolean; tokenShown: string }> {
  // The reader is on the same database (a write replayed is found without a token).
  await notes.cluster.waitForReplay(notes.cluster.standby)
  const seen = await writer.inject({ method: 'POST', url: '/notes' })
  await notes.cluster.waitForReplay(notes.cluster.standby)
  const plain = await reader.inject({ url: `/notes/${(seen.json() as { id: number }).id}` })
  expect({ status: plain.statusCode, body: plain.json() }).toEqual({ status: 200, body: { found: true } })
  await notes.cluster.pauseReplay(notes.cluster.standby)
  const wrote = await writer.inject({ method: 'POST', url: '/notes' })
  const token = wrote.headers[HEADER] as string
  const { id } = wrote.json() as { id: number }
  const read = await reader.inject({ url: `/notes/${id}`, headers: { [HEADER]: token } })
  await notes.cluster.resumeReplay(notes.cluster.standby)
  expect(read.statusCode).toBe(200)
  return { found: (read.json() as { found: boolean }).found, tokenShown: token }
}

describe('one primary, two apps (two pods) under one secret', () => {
  test('control: the writer itself reads its write with its token', async () => {
    expect((await readsOwnWrite(writer)).found).toBe(true)
  })

  test('a second app built from the same URL takes the token', async () => {
    const pod = await notesApp(notes.database.primaryUrl)
    expect((await readsOwnWrite(pod)).found).toBe(true)
  })

  test('a second app given the same server as an options object (another key order) takes the token', async () => {
    const { host, port, user, password, database } = parts(notes.database.primaryUrl)
    const pod = await notesApp({ database, password, port, user, host })
    expect((await readsOwnWrite(pod)).found).toBe(true)
  })

  test("a second app whose options name the database with postgres.js's `db` key takes the token (same primary)", async () => {
    const { host, port, user, password, database } = parts(notes.database.primaryUrl)
    const pod = await notesApp({ host, port, user, password, db: database } as PgPoolCoreOptions['connection'])
    expect((await readsOwnWrite(pod)).found).toBe(true)
  })

  test("a second app whose options name the host with postgres.js's `hostname` key takes the token (same primary)", async () => {
    const { host, port, user, password, database } = parts(notes.database.primaryUrl)
    const pod = await notesApp({ hostname: host, port, user, password, database } as PgPoolCoreOptions['connection'])
    expect((await readsOwnWrite(pod)).found).toBe(true)
  })

  test('a second app that spells the host another way (localhost for 127.0.0.1) takes the token', async () => {
    const { host, port, user, password, database } = parts(notes.database.primaryUrl)
    const other = host === '127.0.0.1' ? 'localhost' : host === 'localhost' ? '127.0.0.1' : host
    const pod = await notesApp({ host: other, port, user, password, database })
    expect((await readsOwnWrite(pod)).found).toBe(true)
  })

  test('a token carries no part of the scope (host, port, database)', async () => {
    const { tokenShown } = await readsOwnWrite(writer)
    const { host, port, database } = parts(notes.database.primaryUrl)
    expect(tokenShown).toMatch(/^[0-9A-F]+\/[0-9A-F]+\.[A-Za-z0-9_-]{22}$/)
    for (const part of [host, String(port), database]) expect(tokenShown).not.toContain(part)
    const decoded = Buffer.from(tokenShown.split('.')[1] as string, 'base64url').toString('latin1')
    for (const part of [host, String(port), database]) expect(decoded).not.toContain(part)
  })
})

describe('two servers, instances spelled with the `hostname`/`db` keys of postgres.js, one secret', () => {
  test("the other server's token is ignored here: reads go by lag alone, at once", async () => {
    // Push the other server's WAL past this cluster's (as test/regressions/ryw-foreign-token does).
    await other.sql`create table events (id serial primary key, body text)`
    const mine = lsnValue(await notes.cluster.currentLsn())
    for (let i = 0; i < 8; i++) {
      const [{ lsn }] = (await other.admin`select pg_current_wal_lsn()::text as lsn`) as unknown as [{ lsn: string }]
      if (lsnValue(lsn) > mine + 1024n * 1024n) break
      await other.sql`insert into events (body) values ('wal')`
      await other.admin`select pg_switch_wal()`
    }
    // Each server as postgres.js's `hostname` (host:port, as postgres.js reads it) and `db` keys:
    // in production, two servers on port 5432, `{ hostname: 'db-a.internal', db: 'app' }` and
    // `{ hostname: 'db-b.internal', db: 'events' }`.
    const n = parts(notes.database.primaryUrl)
    const o = parts(other.url)
    const fallbacks: string[] = []
    const app = Fastify()
    await app.register(pgPoolCore, {
      connection: { hostname: `${n.host}:${n.port}`, user: n.user, password: n.password, db: n.database } as never,
      replicas: [notes.database.standbyUrls[0] as string],
      replica: { lagInterval: 50, maxLag: { seconds: 600 }, readYourWrites: { secret: SECRET, maxWait: MAX_WAIT } },
      pool: { max: 3 },
    })
    await app.register(pgPoolCore, {
      name: 'events',
      connection: { hostname: `${o.host}:${o.port}`, user: o.user, password: o.password, db: o.database } as never,
      replica: { readYourWrites: { secret: SECRET, header: 'x-events-read-after' } },
      pool: { max: 2, pgbouncer: other.viaBouncer },
    })
    apps.push(app)
    app.post('/events', async (request) => {
      const dbs = request.dbs as Record<string, typeof request.db>
      const [row] = await (dbs.events as typeof request.db)`insert into events (body) values ('x') returning id`
      return row
    })
    app.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
      const [row] = await request.db`select pg_is_in_recovery() as standby`
      return row
    })
    app.pgPool.on('readFallback', (reason) => fallbacks.push(reason))
    await app.ready()
    await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 20_000)

    const wrote = await app.inject({ method: 'POST', url: '/events' })
    expect(wrote.statusCode).toBe(200)
    const foreign = wrote.headers['x-events-read-after'] as string
    expect(foreign).toMatch(/^[0-9A-F]+\/[0-9A-F]+\./)
    expect(lsnValue(foreign.split('.')[0] as string)).toBeGreaterThan(lsnValue(await notes.cluster.currentLsn()))
    const results: { standby: unknown; ms: number }[] = []
    for (let i = 0; i < 2; i++) {
      const started = Date.now()
      const read = await app.inject({ url: '/where', headers: { [HEADER]: foreign } })
      results.push({ standby: read.json().standby, ms: Date.now() - started })
    }
    expect(
      { standby: results.map((r) => r.standby), fallbacks },
      `reads took ${results.map((r) => r.ms).join(', ')} ms`,
    ).toEqual({ standby: [true, true], fallbacks: [] })
  })
})

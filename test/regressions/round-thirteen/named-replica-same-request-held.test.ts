// HELD (probe-storm): a named instance with its own replica and read-your-writes: a replica read
// after the same request wrote sees the write (served by its primary connection, replay paused) in
// every spelling earlier rounds did not try: request.dbs.b written then request.dbs.b.replica read, a
// handle taken before the write, a route whose request.db is `b` (request.db.replica and
// request.dbs.b.replica), and a write through request.dbs.b inside b's route transaction.
import pgPoolCore, { type LeaseDb } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../../support/database.js'
import { type ReplicatedDatabase, type ReplicationCluster, startReplication } from '../../support/replication.js'

let cluster: ReplicationCluster
let a: ReplicatedDatabase
let b: ReplicatedDatabase
let app: FastifyInstance
const SECRET = 'a-test-secret-of-some-length'
type Sql = LeaseDb
const rep = (db: Sql | undefined) => db?.replica as Sql

beforeAll(async () => {
  cluster = await startReplication()
  a = await cluster.createDatabase('nr_a')
  b = await cluster.createDatabase('nr_b')
  for (const url of [a.primaryUrl, b.primaryUrl]) {
    const sql = postgres(url, { max: 1, onnotice: () => {} })
    await sql`create table notes (id serial primary key, body text)`
    await sql.end({ timeout: 1 })
  }
  await cluster.waitForReplay(cluster.standby)
  app = Fastify()
  const replica = { lagInterval: 50, maxLag: { seconds: 600 } }
  await app.register(pgPoolCore, {
    connection: a.primaryUrl,
    replicas: [a.standbyUrls[0] as string],
    replica: { ...replica, readYourWrites: { secret: SECRET, maxWait: 200 } },
    pool: { max: 3 },
  })
  await app.register(pgPoolCore, {
    name: 'b',
    connection: b.primaryUrl,
    replicas: [b.standbyUrls[0] as string],
    replica: { ...replica, readYourWrites: { secret: SECRET, maxWait: 200, header: 'x-b-read-after' } },
    pool: { max: 3 },
  })

  const seen = async (db: Sql, id: number | undefined) => {
    const [row] = await db<{ found: boolean; standby: boolean }[]>`
      select exists (select from notes where id = ${id ?? 0}) as found, pg_is_in_recovery() as standby`
    return row
  }
  const insert = async (db: Sql) =>
    (await db<{ id: number }[]>`insert into notes (body) values ('x') returning id`)[0]?.id
  // (request.dbs.b as Sql) written, then (request.dbs.b as Sql).replica read.
  app.post('/dbs-b', async (request) => seen(rep(request.dbs.b as Sql), await insert(request.dbs.b as Sql)))
  // A handle taken before the write.
  app.post('/dbs-b-handle-first', async (request) => {
    const handle = rep(request.dbs.b as Sql)
    return seen(handle, await insert(request.dbs.b as Sql))
  })
  // A route whose request.db is b: request.db written, request.db.replica read.
  app.post('/route-b', { config: { db: { instance: 'b' } } }, async (request) =>
    seen(rep(request.db), await insert(request.db)),
  )
  // The same route, read through (request.dbs.b as Sql).replica (documented: (request.dbs.b as Sql) is request.db there).
  app.post('/route-b-dbs', { config: { db: { instance: 'b' } } }, async (request) =>
    seen(rep(request.dbs.b as Sql), await insert(request.db)),
  )
  // Written through (request.dbs.b as Sql) in a route transaction of b, read through request.db.replica.
  app.post('/route-b-tx', { config: { db: { instance: 'b', transaction: true } } }, async (request) =>
    seen(rep(request.db), await insert(request.dbs.b as Sql)),
  )
  await app.ready()
  await waitUntil(
    () => app.pgPools.all().every((v) => v.role === 'primary' || v.replica()?.usable === true),
    'the replicas to be usable',
    20_000,
  )
}, 120_000)

afterAll(async () => {
  await cluster?.resumeReplay(cluster.standby).catch(() => {})
  await app?.close()
  await cluster?.destroy()
})

describe('named instance: a replica read after the same request wrote', () => {
  test.each(['/dbs-b', '/dbs-b-handle-first', '/route-b', '/route-b-dbs', '/route-b-tx'])('%s', async (url) => {
    await cluster.pauseReplay(cluster.standby)
    try {
      const reply = await app.inject({ method: 'POST', url })
      expect({ status: reply.statusCode, body: reply.json() }).toEqual({
        status: 200,
        body: { found: true, standby: false },
      })
    } finally {
      await cluster.resumeReplay(cluster.standby)
    }
  })
})

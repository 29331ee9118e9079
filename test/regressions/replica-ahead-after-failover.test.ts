import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { type ReplicatedDatabase, type ReplicationCluster, startReplication } from '../support/replication.js'

// Found by hostile probing (failed before the fix): after a failover, a standby left on the old
// timeline *ahead* of the promoted primary's position was sampled as caught up (0 bytes, 0 s),
// so it served reads and every read-your-writes token, though it will never have a write of the
// new primary (docs/replicas.md: a client that sends back its token "reads that write or
// something newer"). A standby never replays past its primary: one ahead of the primary's
// position (read after its own) is now unusable, 'ahead of the primary'. One left behind on the
// old timeline stays on its lag (docs/replicas.md says so).
//
// Scenario: standby-0 falls behind (stopped), the primary writes more WAL that standby-1
// replays, the primary dies, standby-0 is promoted; the app's primary host list follows it.

let cluster: ReplicationCluster
let database: ReplicatedDatabase
let app: FastifyInstance
const HEADER = 'x-pg-read-after'

beforeAll(async () => {
  cluster = await startReplication({ standbys: 2 })
  database = await cluster.createDatabase('probe_timeline')
  const sql = postgres(database.primaryUrl, { max: 1, onnotice: () => {} })
  await sql`create table notes (id serial primary key, body text)`
  await sql.end()
  for (const standby of cluster.standbys) await cluster.waitForReplay(standby)
  const primary = new URL(database.primaryUrl)
  const standby0 = new URL(database.standbyUrls[0] as string)
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: `postgres://${primary.username}:${primary.password}@127.0.0.1:${primary.port},127.0.0.1:${standby0.port}${primary.pathname}`,
    replicas: [database.standbyUrls[1] as string],
    replica: { lagInterval: 50, readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: 100 } },
    pool: { max: 2, connectTimeout: 2_000 },
  })
  app.post('/notes', async (request) => {
    const [row] = await request.db`insert into notes (body) values ('after failover') returning id`
    return row
  })
  app.get('/notes/:id', { config: { db: { readOnly: true } } }, async (request) => {
    const id = Number((request.params as { id: string }).id)
    // By id and body: ids of rows lost in the failover are handed out again by the new primary.
    const [row] = await request.db`select current_setting('port')::int as port,
      exists (select 1 from notes where id = ${id} and body = 'after failover') as found`
    return { found: row?.found === true, port: Number(row?.port) }
  })
  await app.ready()
}, 120_000)

afterAll(async () => {
  await app?.close()
  await cluster?.destroy()
})

describe('failover with a replica ahead of the promoted primary', () => {
  test("a client's token read finds its write made on the new primary", async () => {
    const [standby0, standby1] = cluster.standbys as [
      (typeof cluster.standbys)[number],
      (typeof cluster.standbys)[number],
    ]
    await standby0.stop()
    // WAL that only standby-1 gets.
    const sql = postgres(database.primaryUrl, { max: 1, onnotice: () => {} })
    await sql`insert into notes (body) select 'lost on failover ' || g from generate_series(1, 5000) g`
    await sql.end()
    await cluster.waitForReplay(standby1)
    await cluster.primary.kill()
    await standby0.start()
    await cluster.promote(standby0)

    // Writes follow the host list to standby-0.
    let write = await app.inject({ method: 'POST', url: '/notes' })
    await waitUntil(
      async () => {
        if (write.statusCode === 200) return true
        write = await app.inject({ method: 'POST', url: '/notes' })
        return write.statusCode === 200
      },
      'a write to succeed on the promoted standby',
      20_000,
    )
    const token = write.headers[HEADER]
    expect(typeof token).toBe('string')
    // The monitor samples the new primary, and finds standby-1 past it.
    await waitUntil(
      () => app.pgPools.all()[1]?.replica()?.lag?.error?.startsWith('ahead of the primary') === true,
      'the monitor to find standby-1 ahead of the new primary',
      15_000,
    )
    expect(app.pgPools.all()[1]?.replica()?.usable).toBe(false)
    const read = (await app.inject({ url: `/notes/${write.json().id}`, headers: { [HEADER]: String(token) } })).json()
    expect(read.found, `the read went to port ${read.port} (standby-1 is ${standby1.port})`).toBe(true)
    expect(read.port).toBe(standby0.port)
  }, 90_000)
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { type ReplicatedDatabase, type ReplicationCluster, startReplication } from '../support/replication.js'

// Issue 20: after a request that wrote, the client carries its commit's position; a later
// read-only request goes to a replica only once that replica has replayed it. 1,000
// write-then-read pairs from one client while the replica's replay is paused and resumed at
// random: no read misses its own write.

let cluster: ReplicationCluster
let database: ReplicatedDatabase
let app: FastifyInstance
const HEADER = 'x-pg-read-after'

beforeAll(async () => {
  cluster = await startReplication()
  database = await cluster.createDatabase('ryw')
  const sql = postgres(database.primaryUrl, { max: 1, onnotice: () => {} })
  await sql`create table notes (id serial primary key, body text)`
  await sql.end()
  await cluster.waitForReplay(cluster.standby)
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: database.primaryUrl,
    replicas: [database.standbyUrls[0] as string],
    // A replica seconds behind still gets reads: only the token keeps a client's own write in view.
    replica: {
      lagInterval: 50,
      maxLag: { seconds: 60 },
      readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: 100 },
    },
    pool: { max: 4 },
  })
  app.post('/notes', async (request) => {
    const [row] = await request.db`insert into notes (body) values ('mine') returning id`
    return row
  })
  app.post('/notes-tx', { config: { db: { transaction: true } } }, async (request) => {
    const [row] = await request.db`insert into notes (body) values ('mine, in a transaction') returning id`
    return row
  })
  app.get('/notes/:id', { config: { db: { readOnly: true } } }, async (request) => {
    const id = Number((request.params as { id: string }).id)
    const [row] = await request.db`select id, pg_is_in_recovery() as standby from notes where id = ${id}`
    return { found: row !== undefined, standby: row?.standby ?? null }
  })
  await app.ready()
  await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
}, 120_000)
afterAll(async () => {
  await app?.close()
  await cluster?.destroy()
})

describe('read-your-writes', () => {
  test('1,000 write-then-read pairs with replay paused and resumed at random: zero misses', async () => {
    let stop = false
    let paused = false
    const flapper = (async () => {
      while (!stop) {
        await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 60))
        if (stop) break
        paused = !paused
        await (paused ? cluster.pauseReplay(cluster.standby) : cluster.resumeReplay(cluster.standby))
      }
    })()
    let misses = 0
    let onReplica = 0
    let tokens = 0
    try {
      for (let i = 0; i < 1_000; i++) {
        const write = await app.inject({ method: 'POST', url: i % 2 === 0 ? '/notes' : '/notes-tx' })
        expect(write.statusCode).toBe(200)
        const token = write.headers[HEADER]
        if (typeof token === 'string') tokens++
        const read = await app.inject({
          url: `/notes/${write.json().id}`,
          headers: typeof token === 'string' ? { [HEADER]: token } : {},
        })
        const body = read.json()
        if (!body.found) misses++
        if (body.standby) onReplica++
      }
    } finally {
      stop = true
      await flapper
      await cluster.resumeReplay(cluster.standby)
    }
    console.log(`[read-your-writes] 1000 pairs: ${misses} misses, ${onReplica} reads on the replica, ${tokens} tokens`)
    expect(tokens).toBe(1_000)
    expect(misses).toBe(0)
    // Not every read went to the primary: the replica served those it had caught up for.
    expect(onReplica).toBeGreaterThan(0)
  }, 180_000)

  test('control: without the token, reads during a paused replay miss their write (the test above can fail)', async () => {
    await cluster.pauseReplay(cluster.standby)
    let misses = 0
    try {
      for (let i = 0; i < 20; i++) {
        const write = await app.inject({ method: 'POST', url: '/notes' })
        const read = await app.inject({ url: `/notes/${write.json().id}` })
        if (!read.json().found) misses++
      }
    } finally {
      await cluster.resumeReplay(cluster.standby)
    }
    expect(misses).toBe(20)
  })

  test('a forged or altered token is ignored (it cannot pin reads on the primary)', async () => {
    const write = await app.inject({ method: 'POST', url: '/notes' })
    const token = String(write.headers[HEADER])
    const [lsn] = token.split('.')
    const forged = `${lsn}.${Buffer.alloc(16).toString('base64url')}`
    const fallbacks: string[] = []
    app.pgPool.on('readFallback', (reason) => fallbacks.push(reason))
    await cluster.pauseReplay(cluster.standby)
    try {
      await app.inject({ url: `/notes/${write.json().id}`, headers: { [HEADER]: forged } })
      expect(fallbacks).not.toContain('behind_write')
    } finally {
      await cluster.resumeReplay(cluster.standby)
    }
  })
})

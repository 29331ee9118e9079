import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { useNotesCluster } from '../support/notes-cluster.js'
import { type PgBouncer, startPgBouncer } from '../support/pgbouncer.js'

// Issue 20: PgBouncer (transaction mode) in front of the primary still works with replicas: writes
// go through PgBouncer to the primary, read-only routes to the replica, the lag monitor reads the
// primary's WAL position through PgBouncer, and read-your-writes tokens still hold.
// Runs only in the PgBouncer leg (vitest.pgbouncer.config.ts): it needs the pgbouncer binary.

const notes = useNotesCluster('bounced')
let bouncer: PgBouncer
let app: FastifyInstance | undefined

beforeAll(async () => {
  bouncer = await startPgBouncer({ upstream: notes.database.primaryUrl, defaultPoolSize: 4 })
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(async () => {
  await bouncer?.stop()
})

async function bouncedApp(): Promise<FastifyInstance> {
  const instance = Fastify()
  await instance.register(pgPoolCore, {
    connection: bouncer.via(notes.database.primaryUrl),
    pool: { max: 4, pgbouncer: true },
    replicas: [notes.database.standbyUrls[0] as string],
    replica: { lagInterval: 50, maxLag: { seconds: 0.2 }, readYourWrites: { secret: 'a'.repeat(32) } },
  })
  instance.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db<{ standby: boolean; notes: number }[]>`
      select pg_is_in_recovery() as standby, (select count(*)::int from notes) as notes`
    return row
  })
  instance.post('/write', { config: { db: { transaction: true } } }, async (request) => {
    const [row] = await request.db<{ id: number }[]>`insert into notes (body) values ('x') returning id`
    return row
  })
  await instance.ready()
  return instance
}

describe('PgBouncer in front of the primary, a replica beside it', () => {
  test('writes through PgBouncer to the primary, reads on the replica, the lag measured through PgBouncer', async () => {
    app = await bouncedApp()
    const current = app
    await waitUntil(() => current.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
    const write = await app.inject({ method: 'POST', url: '/write' })
    expect(write.statusCode).toBe(200)
    const [row] = await notes.primarySql<
      { n: number }[]
    >`select count(*)::int as n from notes where id = ${write.json().id}`
    expect(row?.n).toBe(1)
    expect((await app.inject('/where')).json().standby).toBe(true)

    // Held back past maxLag: the monitor, reading the primary through PgBouncer, sees the lag.
    await notes.cluster.pauseReplay(notes.cluster.standby)
    await notes.primarySql`insert into notes (body) values ('behind')`
    await waitUntil(() => current.pgPools.all()[1]?.replica()?.usable === false, 'the replica to lag', 10_000)
    expect((await app.inject('/where')).json().standby).toBe(false)
    await notes.cluster.resumeReplay(notes.cluster.standby)
    await waitUntil(() => current.pgPools.all()[1]?.replica()?.usable === true, 'the replica to catch up', 10_000)
  })

  test("read-your-writes through PgBouncer: a read after the client's own write never misses it", async () => {
    app = await bouncedApp()
    const current = app
    await waitUntil(() => current.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
    // maxLag is 0.2 s: pausing replay and writing at once leaves the replica usable by lag for a
    // moment, so only the token keeps the read off it.
    await notes.cluster.pauseReplay(notes.cluster.standby)
    for (let i = 0; i < 20; i++) {
      const write = await app.inject({ method: 'POST', url: '/write' })
      expect(write.statusCode, write.body).toBe(200)
      const token = write.headers['x-pg-read-after']
      expect(typeof token).toBe('string')
      const read = await app.inject({ url: '/where', headers: { 'x-pg-read-after': token as string } })
      const [row] = await notes.primarySql<{ n: number }[]>`select count(*)::int as n from notes`
      // The read saw every row there was when it was sent, the client's own write included.
      expect(read.json().notes).toBe(row?.n)
    }
  })
})

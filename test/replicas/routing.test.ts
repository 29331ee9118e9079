import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterEach, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { useNotesCluster } from '../support/notes-cluster.js'

// Issue 20: reads of read-only routes go to a streaming replica, writes to the primary; a
// replica held back past maxLag gets no reads until it catches up.

const notes = useNotesCluster('routing')
let app: FastifyInstance | undefined

afterEach(async () => {
  await app?.close()
  app = undefined
})

async function replicaApp(replica: Record<string, unknown> = {}): Promise<FastifyInstance> {
  const instance = Fastify()
  await instance.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: { lagInterval: 50, ...replica },
    pool: { max: 4 },
  })
  instance.get('/where', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db`select pg_is_in_recovery() as standby, (select count(*)::int from notes) as notes`
    return row
  })
  instance.post('/write', async (request) => {
    const [row] = await request.db`insert into notes (body) values ('x') returning id`
    return row
  })
  instance.post(
    '/write-in-read',
    { config: { db: { readOnly: true } } },
    async (request) => request.db`insert into notes (body) values ('nope')`,
  )
  instance.get('/per-query', async (request) => {
    const [own] = await request.db`select pg_is_in_recovery() as standby`
    const [read] = await (request.db.replica as NonNullable<
      typeof request.db.replica
    >)`select pg_is_in_recovery() as standby`
    return { own: own?.standby, read: read?.standby }
  })
  await instance.ready()
  return instance
}

describe('read replicas', () => {
  test('read-only routes land on the replica, writes on the primary; a write in a read-only route is a coded 25006', async () => {
    // Samples a second apart: with 50 ms, one late sample on a loaded machine made the replica
    // stale between the wait and the read (the read went to the primary: failed once under load).
    app = await replicaApp({ lagInterval: 1_000 })
    const current = app
    await waitUntil(() => current.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
    expect((await app.inject('/where')).json()).toMatchObject({ standby: true })
    expect((await app.inject({ method: 'POST', url: '/write' })).statusCode).toBe(200)
    const refused = await app.inject({ method: 'POST', url: '/write-in-read' })
    expect(refused.json().code).toBe('25006')
    expect((await app.inject('/per-query')).json()).toEqual({ own: false, read: true })
    const [views] = [app.pgPools.all().map((view) => [view.name, view.role])]
    expect(views).toEqual([
      ['primary', 'primary'],
      ['replica-0', 'replica'],
    ])
  })

  test('a replica held back past maxLag gets no reads until it catches up', async () => {
    app = await replicaApp({ maxLag: { seconds: 0.2 } })
    const current = app
    await waitUntil(() => current.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
    const fallbacks: string[] = []
    app.pgPool.on('readFallback', (reason) => fallbacks.push(reason))
    await notes.cluster.pauseReplay(notes.cluster.standby)
    await notes.primarySql`insert into notes (body) values ('behind')`
    await waitUntil(() => current.pgPools.all()[1]?.replica()?.usable === false, 'the replica to lag', 10_000)
    const primaryRead = (await app.inject('/where')).json()
    expect(primaryRead.standby).toBe(false)
    expect(fallbacks).toContain('lagging')
    // On the primary the read-only route still cannot write.
    expect((await app.inject({ method: 'POST', url: '/write-in-read' })).json().code).toBe('25006')
    await notes.cluster.resumeReplay(notes.cluster.standby)
    await waitUntil(() => current.pgPools.all()[1]?.replica()?.usable === true, 'the replica to catch up', 10_000)
    expect((await app.inject('/where')).json().standby).toBe(true)
  })
})

// Found by hostile probing (failed on 15a3df7): a request that wrote got no read-your-writes token, and
// its client's next read could be stale, when the reply was a 4xx after an autocommitted write, a
// stream, or when the write went through request.dbs.<name>. The controls passed before.
import { Readable } from 'node:stream'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../support/database.js'
import { type ReplicatedDatabase, type ReplicationCluster, startReplication } from '../support/replication.js'

declare module '@fastify-pg-pool/core' {
  interface PgPoolInstances {
    other: true
  }
}

let cluster: ReplicationCluster
let main: ReplicatedDatabase
let other: ReplicatedDatabase
let app: FastifyInstance
const HEADER = 'x-pg-read-after'
const ryw = {
  lagInterval: 50,
  maxLag: { seconds: 600 },
  readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: 100 },
}

beforeAll(async () => {
  cluster = await startReplication()
  main = await cluster.createDatabase('rywmain')
  other = await cluster.createDatabase('rywother')
  for (const database of [main, other]) {
    const sql = postgres(database.primaryUrl, { max: 1, onnotice: () => {} })
    await sql`create table notes (id serial primary key, body text)`
    await sql.end()
  }
  await cluster.waitForReplay(cluster.standby)
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: main.primaryUrl,
    replicas: [main.standbyUrls[0] as string],
    replica: ryw,
    pool: { max: 4 },
  })
  await app.register(pgPoolCore, {
    name: 'other',
    connection: other.primaryUrl,
    replicas: [other.standbyUrls[0] as string],
    replica: ryw,
    pool: { max: 4 },
  })
  const insert = (db: (s: TemplateStringsArray) => Promise<{ id: number }[]>) =>
    db`insert into notes (body) values ('mine') returning id`
  // An autocommitted write, then a 4xx reply (validation of something after the insert, an audit row...).
  app.post('/write-then-422', async (request, reply) => {
    const [row] = await insert(request.db)
    return reply.code(422).send({ id: row?.id })
  })
  app.post('/write-begin', async (request) => {
    const [row] = await request.db.begin(async (tx) => insert(tx))
    return row
  })
  app.post('/write-pipelined', { config: { db: { pipeline: true } } }, async (request) => (await insert(request.db))[0])
  app.post('/write-stream', async (request, reply) => {
    const [row] = await insert(request.db)
    reply.header('x-id', String(row?.id))
    return Readable.from([JSON.stringify(row)])
  })
  app.post('/write-other', async (request) => (await insert(request.dbs.other))[0])
  app.post(
    '/write-other-route',
    { config: { db: { instance: 'other' } } },
    async (request) => (await insert(request.db))[0],
  )
  const read = async (request: FastifyRequest) => {
    const id = Number((request.params as { id: string }).id)
    const [row] = await request.db<
      { standby: boolean }[]
    >`select id, pg_is_in_recovery() as standby from notes where id = ${id}`
    return { found: row !== undefined, standby: row?.standby ?? null }
  }
  app.get('/main/:id', { config: { db: { readOnly: true } } }, read)
  app.get('/other/:id', { config: { db: { readOnly: true, instance: 'other' } } }, read)
  app.get('/main-replica/:id', async (request) => {
    const id = Number((request.params as { id: string }).id)
    const [row] = await (request.db.replica as NonNullable<
      typeof request.db.replica
    >)`select id from notes where id = ${id}`
    return { found: row !== undefined }
  })
  await app.ready()
  await waitUntil(
    () => app.pgPools.all().every((view) => view.role === 'primary' || view.replica()?.usable === true),
    'the replicas to be usable',
    15_000,
  )
}, 120_000)
afterEach(async () => {
  await cluster.resumeReplay(cluster.standby)
})
afterAll(async () => {
  await app?.close()
  await cluster?.destroy()
})

/** Write with replay paused, then read it back sending the token the write's reply carried. */
async function writeThenRead(writeUrl: string, readPrefix: string) {
  await cluster.pauseReplay(cluster.standby)
  const write = await app.inject({ method: 'POST', url: writeUrl })
  const id = write.headers['x-id'] ?? write.json().id
  const token = write.headers[HEADER]
  const read = await app.inject({
    url: `${readPrefix}/${id}`,
    headers: typeof token === 'string' ? { [HEADER]: token } : {},
  })
  return { writeStatus: write.statusCode, token: typeof token === 'string', found: read.json().found }
}

describe('read-your-writes: every response to a request that wrote carries a token', () => {
  test('control: a write inside request.db.begin()', async () => {
    expect(await writeThenRead('/write-begin', '/main')).toEqual({ writeStatus: 200, token: true, found: true })
  })
  test('control: request.db.replica honours the token', async () => {
    expect(await writeThenRead('/write-begin', '/main-replica')).toEqual({ writeStatus: 200, token: true, found: true })
  })
  test('control: a write on a route whose request.db is the named instance', async () => {
    expect(await writeThenRead('/write-other-route', '/other')).toEqual({ writeStatus: 200, token: true, found: true })
  })
  test('a pipelined write route', async () => {
    expect(await writeThenRead('/write-pipelined', '/main')).toEqual({ writeStatus: 200, token: true, found: true })
  })
  test('an autocommitted write whose reply is a 4xx (the row is committed)', async () => {
    expect(await writeThenRead('/write-then-422', '/main')).toEqual({ writeStatus: 422, token: true, found: true })
  })
  test('a write whose reply is a stream', async () => {
    expect(await writeThenRead('/write-stream', '/main')).toEqual({ writeStatus: 200, token: true, found: true })
  })
  test('a write through request.dbs.<name> (an instance with readYourWrites)', async () => {
    expect(await writeThenRead('/write-other', '/other')).toEqual({ writeStatus: 200, token: true, found: true })
  })
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../../support/database.js'
import { type NotesCluster, startNotesCluster } from '../../support/replication.js'

// DEFECT (read-your-writes token missing for writes read with `.values()` / `.raw()`).
//
// What the user does: `replica.readYourWrites` on; a route writes with postgres.js's compact result
// forms, `request.db\`insert ... returning id\`.values()` (or `.raw()`), then the client reads
// its write on a read-only route, sending back the token it got (none).
// What they see: the write's reply carries no `x-pg-read-after` token, so the next read goes by
// lag alone and, on a replica behind the write, misses it (200 { found: false } from the standby).
// The same insert without `.values()` gets its token.
// What they should see (docs/replicas.md, Read-your-writes 1.): "A response to a request that
// wrote (... statements whose command tags say they wrote) carries a token": the tag is INSERT.
//
// Cause: packages/core/src/postgres-adapter.ts:481-487 `commandsOf` takes a result whose first
// element is an array for the results of a multi-statement message (`Array.isArray(value[0])`):
// with `.values()`/`.raw()` every row is an array, so each ROW is read as a result with no
// command, the tags come out as [''], and lease.ts:772 `commands.some(isWrite)` (write-position.ts:
// isWrite('') === false) never marks the lease as having written: no capture at release
// (lease.ts #captureThenRelease), no token. Suggested fix: tell a multi-statement answer by its
// elements being postgres.js Results (a `command` property / `count`), not by being arrays; or
// read `value.command` first when present.

let notes: NotesCluster
let app: FastifyInstance
const HEADER = 'x-pg-read-after'

beforeAll(async () => {
  notes = await startNotesCluster('probe_ryw_values')
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: {
      lagInterval: 50,
      maxLag: { seconds: 600 },
      readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: 200 },
    },
    pool: { max: 4 },
  })
  app.post('/plain', async (request) => {
    const [row] = await request.db<{ id: number }[]>`insert into notes (body) values ('plain') returning id`
    return { id: row?.id }
  })
  app.post('/values', async (request) => {
    const [row] = await request.db`insert into notes (body) values ('values') returning id`.values()
    return { id: Number(row?.[0]) }
  })
  app.post('/raw', async (request) => {
    const [row] = await request.db`insert into notes (body) values ('raw') returning id::text`.raw()
    return { id: Number(String(row?.[0])) }
  })
  app.get('/notes/:id', { config: { db: { readOnly: true } } }, async (request) => {
    const id = Number((request.params as { id: string }).id)
    const [row] = await request.db<{ found: boolean; standby: boolean }[]>`
      select exists (select 1 from notes where id = ${id}) as found, pg_is_in_recovery() as standby`
    return row
  })
  await app.ready()
  await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 20_000)
}, 120_000)

afterAll(async () => {
  await app?.close()
  await notes?.destroy()
})

async function writeThenRead(url: string): Promise<{ token: boolean; found: unknown }> {
  await notes.cluster.pauseReplay(notes.cluster.standby)
  try {
    const written = await app.inject({ method: 'POST', url })
    expect(written.statusCode).toBe(200)
    const id = (written.json() as { id: number }).id
    const token = written.headers[HEADER]
    const read = await app.inject({
      url: `/notes/${id}`,
      headers: typeof token === 'string' ? { [HEADER]: token } : {},
    })
    return { token: typeof token === 'string', found: read.json().found }
  } finally {
    await notes.cluster.resumeReplay(notes.cluster.standby)
    await notes.cluster.waitForReplay(notes.cluster.standby)
  }
}

describe('read-your-writes after a write read with .values() / .raw()', () => {
  test('control: a plain insert gets its token and its read sees it', async () => {
    expect(await writeThenRead('/plain')).toEqual({ token: true, found: true })
  })

  test('an insert read with .values() gets its token and its read sees it', async () => {
    // Seen: { token: false, found: false }.
    expect(await writeThenRead('/values')).toEqual({ token: true, found: true })
  })

  test('an insert read with .raw() gets its token and its read sees it', async () => {
    // Seen: { token: false, found: false }.
    expect(await writeThenRead('/raw')).toEqual({ token: true, found: true })
  })
})

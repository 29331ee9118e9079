// HELD (probe-storm): read-your-writes tokens for every form a write can take on request.db that
// earlier rounds did not try (a cursor as an async iterator and with a callback, forEach with and
// without rows, execute(), simple(), unsafe with parameters, COPY FROM STDIN through writable(),
// CALL of a procedure, a DO block, MERGE, a begin() block, a savepoint inside it): each reply carries
// its token and the token read, with the replica's replay paused, sees the write (from the primary).
// (A data-modifying CTE gets none: documented in docs/replicas.md.)

import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import pgPoolCore, { type LeaseDb } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitUntil } from '../../support/database.js'
import { type NotesCluster, startNotesCluster } from '../../support/replication.js'

let notes: NotesCluster
let app: FastifyInstance
const HEADER = 'x-pg-read-after'
type Sql = LeaseDb

const forms: Record<string, (db: Sql, body: string) => Promise<unknown>> = {
  plain: (db, body) => db`insert into notes (body) values (${body})`,
  cursorIter: async (db, body) => {
    for await (const _rows of db`insert into notes (body) values (${body}) returning id`.cursor(1)) {
      // read
    }
  },
  cursorCb: (db, body) => db`insert into notes (body) values (${body}) returning id`.cursor(1, () => {}),
  forEach: (db, body) => db`insert into notes (body) values (${body}) returning id`.forEach(() => {}),
  forEachNoRows: (db, body) => db`insert into notes (body) values (${body})`.forEach(() => {}),
  execute: (db, body) => db`insert into notes (body) values (${body})`.execute(),
  simple: (db, body) => db.unsafe(`insert into notes (body) values ('${body}')`).simple(),
  unsafeParams: (db, body) => db.unsafe('insert into notes (body) values ($1)', [body]),
  copyIn: async (db, body) => {
    const writable = await db`copy notes (body) from stdin`.writable()
    await pipeline(Readable.from([`${body}\n`]), writable)
  },
  callProc: (db, body) => db`call add_note(${body})`,
  doBlock: (db, body) => db.unsafe(`do $$ begin insert into notes (body) values ('${body}'); end $$`),
  merge: (db, body) =>
    db`merge into notes n using (select ${body}::text as b) s on false when not matched then insert (body) values (s.b)`,
  beginBlock: (db, body) => db.begin((tx) => tx`insert into notes (body) values (${body})`),
  savepointInBegin: (db, body) =>
    db.begin((tx) =>
      (tx as unknown as { savepoint: (f: (s: Sql) => unknown) => Promise<unknown> }).savepoint(
        (sp) => sp`insert into notes (body) values (${body})`,
      ),
    ),
}

beforeAll(async () => {
  notes = await startNotesCluster('probe_storm_forms')
  await notes.primarySql`create procedure add_note(b text) language sql as $$ insert into notes (body) values (b) $$`
  await notes.cluster.waitForReplay(notes.cluster.standby)
  app = Fastify()
  await app.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [notes.database.standbyUrls[0] as string],
    replica: {
      lagInterval: 50,
      maxLag: { seconds: 600 },
      readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: 200 },
    },
    pool: { max: 3 },
  })
  app.post('/w/:form', async (request: FastifyRequest) => {
    const { form } = request.params as { form: string }
    await forms[form]?.(request.db, `form-${form}`)
    return { ok: true }
  })
  app.get('/r/:form', { config: { db: { readOnly: true } } }, async (request) => {
    const { form } = request.params as { form: string }
    const [row] = await request.db<{ found: boolean; standby: boolean }[]>`
      select exists (select from notes where body = ${`form-${form}`}) as found, pg_is_in_recovery() as standby`
    return row
  })
  await app.ready()
  await waitUntil(() => app.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 20_000)
}, 120_000)

afterAll(async () => {
  await notes?.cluster.resumeReplay(notes.cluster.standby).catch(() => {})
  await app?.close()
  await notes?.destroy()
})

describe('write forms', () => {
  test.each(Object.keys(forms))('%s', async (form) => {
    await notes.cluster.pauseReplay(notes.cluster.standby)
    try {
      const w = await app.inject({ method: 'POST', url: `/w/${form}` })
      const token = w.headers[HEADER]
      const r = await app.inject({ url: `/r/${form}`, headers: token ? { [HEADER]: String(token) } : {} })
      expect({ status: w.statusCode, body: w.json(), token: token !== undefined, read: r.json() }).toEqual({
        status: 200,
        body: { ok: true },
        token: true,
        read: { found: true, standby: false },
      })
    } finally {
      await notes.cluster.resumeReplay(notes.cluster.standby)
    }
  })
})

import { randomBytes } from 'node:crypto'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { urlAs, waitUntil } from '../../support/database.js'
import { type NotesCluster, startNotesCluster } from '../../support/replication.js'

// DEFECT: a route transaction (`config: { db: { transaction: true } }`) on an instance with
// read-your-writes commits, and the client gets a 500 FST_PG_POOL_COMMIT_FAILED "The transaction
// was not committed" anyway, whenever the read of the commit's WAL position fails.
//
// What the user does: read-your-writes on (`replica.readYourWrites`), a route transaction that
// writes; the pool login may not run pg_current_wal_insert_lsn() (a platform that revoked EXECUTE
// on the WAL functions from PUBLIC; equally a `text` type of another schema ahead of pg_catalog on
// the search_path whose check fails, see ryw-sql-search-path.test.ts, or any error of that SELECT).
// What they see: 500 FST_PG_POOL_COMMIT_FAILED (42501), "nothing was committed" (README error
// table), while the row IS committed: a client that retries on that 500 writes it twice.
// What they should see: the 2xx of the committed work (without a token: the next read goes by lag
// alone, as after writes outside a transaction, lease.ts #captureThenRelease).
//
// Cause: packages/core/src/lease.ts:1347 sends `COMMIT; SELECT pg_catalog.pg_current_wal_insert_lsn()::text`
// as one simple-protocol message; postgres.js rejects the whole message when its second statement
// fails, although the COMMIT before it was answered; the catch (lease.ts:1356) hands that error to
// commitFailure (commit-outcome.ts:26), which reads any server error as "it did not commit".
// Suggested fix: when the capture rides with the COMMIT and the message fails, tell the two apart
// (the COMMIT's tag is in the error's partial results, or send the capture as its own message
// after COMMIT's answer, as #captureThenRelease does), and treat a failed capture as "no token".

let notes: NotesCluster
let app: FastifyInstance | undefined
const role = `fpp_hijack_app_${randomBytes(3).toString('hex')}`
const password = 'hijack-app-pw'

beforeAll(async () => {
  notes = await startNotesCluster('probe_hijack_commit')
  const { primarySql, cluster } = notes
  await primarySql.unsafe(`
    create role ${role} login password '${password}';
    grant select, insert on notes to ${role};
    grant usage on sequence notes_id_seq to ${role};
    revoke execute on function pg_catalog.pg_current_wal_insert_lsn() from public;
  `)
  await cluster.waitForReplay(cluster.standby)
}, 120_000)

afterEach(async () => {
  await app?.close()
  app = undefined
})

afterAll(async () => {
  await notes?.destroy()
})

describe('read-your-writes: the commit position cannot be read after a route transaction commits', () => {
  test('the committed write is answered 200, not 500 "not committed"', async () => {
    const { database } = notes
    app = Fastify()
    await app.register(pgPoolCore, {
      connection: urlAs(database.primaryUrl, role, password),
      replicas: [urlAs(database.standbyUrls[0] as string, role, password)],
      replica: {
        lagInterval: 50,
        maxLag: { seconds: 600 },
        readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: 2_000 },
      },
      pool: { max: 2 },
    })
    app.post('/notes', { config: { db: { transaction: true } } }, async (request) => {
      const [row] = await request.db<{ id: number }[]>`insert into notes (body) values ('committed?') returning id`
      return row
    })
    await app.ready()
    await waitUntil(() => app?.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 20_000)

    const reply = await app.inject({ method: 'POST', url: '/notes' })
    const [stored] = await notes.primarySql<
      { n: number }[]
    >`select count(*)::int as n from notes where body = 'committed?'`
    // The row is there: the transaction committed.
    expect(stored?.n).toBe(1)
    const body = reply.json() as { id?: number; code?: string; message?: string }
    expect({ status: reply.statusCode, code: body.code, message: body.message }).toEqual({
      status: 200,
      code: undefined,
      message: undefined,
    })
  })
})

// DEFECT (same cause as own-sql-search-path.test.ts, on the replica paths): with a database
// search_path that puts a writable schema ahead of pg_catalog (set by the database's non-superuser
// owner), the read-your-writes capture and the lag sampler run that schema's code as the pool's
// login, on the primary and on the standby.
//
// What the user does: `replicas` + `replica.readYourWrites`, a route that writes; the database owner
// created a domain `evil.text` (its CHECK calls the owner's function) and an operator
// `evil.-(timestamptz, timestamptz)`. What they see: the owner's code runs, as the superuser login,
// in `SELECT pg_catalog.pg_current_wal_insert_lsn()::text` (every write, on the request's
// connection), `pg_current_wal_lsn()::text` (the monitor, every lagInterval), the replica sample
// (`::text` and `now() - pg_last_xact_replay_timestamp()`) and the budget's
// `system_identifier::text`. Besides running code, such an operator can answer any lag it likes, and
// a check that fails makes the capture fail (see ryw-capture-fails-after-commit.test.ts).
// What they should see: none of it runs.
//
// Cause: packages/core/src/write-position.ts:9 and lsn-source.ts:12-14 (`::text`, `::float8`, `-`
// unqualified), connection-budget.ts:54 (`::text`). Suggested fix: `::pg_catalog.text`,
// `::pg_catalog.float8`, `OPERATOR(pg_catalog.-)`.

import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { urlAs, waitFor, waitUntil } from '../../support/database.js'
import { type NotesCluster, startNotesCluster } from '../../support/replication.js'

let notes: NotesCluster
let app: FastifyInstance | undefined
const owner = `fpp_hijack_${randomBytes(3).toString('hex')}`
const password = 'hijack-pw'
const MARK = `evil-ran-${randomBytes(4).toString('hex')}`

beforeAll(async () => {
  notes = await startNotesCluster('probe_hijack_ryw')
  const { database, primarySql, cluster } = notes
  await primarySql.unsafe(
    `create role ${owner} login password '${password}'; alter database ${database.name} owner to ${owner}`,
  )
  const as = postgres(urlAs(database.primaryUrl, owner, password), { max: 1, onnotice: () => {} })
  try {
    await as.unsafe(`
      create schema evil;
      create table evil.hits (who pg_catalog.text, what pg_catalog.text, app pg_catalog.text, query pg_catalog.text);
      grant insert on evil.hits to public;
      -- On the primary: a row per call. On a standby (read-only): a line in its server log.
      create function evil.hit(what pg_catalog.text) returns pg_catalog.bool language plpgsql as $f$
        begin
          if pg_catalog.pg_is_in_recovery() then
            raise log '${MARK} % as % by %', what, current_user, pg_catalog.current_query();
          else
            insert into evil.hits values (current_user, what, pg_catalog.current_setting('application_name'), pg_catalog.current_query());
          end if;
          return true;
        end $f$;
      create function evil.ts_minus(pg_catalog.timestamptz, pg_catalog.timestamptz) returns pg_catalog.interval language plpgsql as $f$
        begin perform evil.hit('timestamptz - timestamptz'); return $1 operator(pg_catalog.-) $2; end $f$;
      create operator evil.- (leftarg = pg_catalog.timestamptz, rightarg = pg_catalog.timestamptz, function = evil.ts_minus);
      create domain evil.text as pg_catalog.text check (evil.hit('::text'));
      alter database ${database.name} set search_path = evil, pg_catalog, public;
    `)
  } finally {
    await as.end({ timeout: 1 })
  }
  await cluster.waitForReplay(cluster.standby)
}, 120_000)

afterAll(async () => {
  await app?.close()
  await notes?.destroy()
})

describe('read-your-writes and lag sampling on a database whose owner put a schema ahead of pg_catalog', () => {
  test("the library's LSN statements run none of that schema's code (as the pool login, a superuser here)", async () => {
    app = Fastify()
    await app.register(pgPoolCore, {
      connection: notes.database.primaryUrl,
      replicas: [notes.database.standbyUrls[0] as string],
      replica: {
        lagInterval: 50,
        maxLag: { seconds: 600 },
        readYourWrites: { secret: 'a-test-secret-of-some-length', maxWait: 2_000 },
      },
      pool: { max: 2, applicationName: 'hijack-ryw' },
    })
    app.post('/notes', async (request) => {
      const [row] = await request.db`insert into public.notes (body) values ('mine') returning id`
      return row
    })
    await app.ready()
    await waitUntil(() => app?.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 20_000)
    const write = await app.inject({ method: 'POST', url: '/notes' })
    expect(write.statusCode).toBe(200)
    expect(write.headers['x-pg-read-after']).toBeDefined()
    // A few more lag samples.
    await waitFor(() => false, 500)
    await app.close()
    app = undefined

    const primary = await notes.primarySql<{ who: string; what: string; query: string }[]>`
      select distinct who, what, pg_catalog.left(query, 70) as query from evil.hits
      where app operator(pg_catalog.~~) 'hijack-ryw%' order by 2, 3`
    const log = await readFile(notes.cluster.standby.logFile, 'utf8')
    const standby = [
      ...new Set(
        log
          .split('\n')
          .filter((line) => line.includes(MARK))
          .map((line) => line.slice(line.indexOf(MARK))),
      ),
    ]
    expect({ primary, standby }).toEqual({ primary: [], standby: [] })
  })
})

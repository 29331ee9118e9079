// DEFECT: the library's own statements call pg_catalog objects unqualified, so a database (or
// role) search_path that puts a writable schema ahead of pg_catalog makes them run that schema's
// code, as the pool's login: a privilege escalation when the login is more privileged than
// whoever set the search_path (here: a non-superuser database owner, `ALTER DATABASE ... SET
// search_path = evil, pg_catalog, public`, becomes superuser as soon as an app whose pool logs in
// as a superuser starts, or opens any connection, or answers a health ping).
//
// What the user does: points the pool at a database whose owner (not a superuser) set its
// search_path so; the pool logs in as a more privileged role. What they see: the owner's functions
// run as the pool login in the library's statements; the owner is superuser afterwards. What they
// should see: nothing of that schema runs in the library's own statements, as session-reset.ts
// promises for the reset ("Every operator spelled OPERATOR(pg_catalog.x): an unqualified one
// resolves through the search_path ... where a schema the app can write may come before
// pg_catalog. Functions and types qualified likewise").
//
// Cause:
// - packages/core/src/postgres-adapter.ts:741 `select pg_backend_pid() as pid`, run on EVERY new
//   connection (pool, ping, replica pools) before anything else;
// - postgres-adapter.ts:779-781 ARRAY_TYPES_SQL: `b.oid = a.typelem`, `a.typcategory = 'A'`
//   (unqualified operators; once per pool);
// - packages/core/src/connection-budget.ts:49-57: current_setting(), count(*), pg_stat_activity,
//   `||`, `system_identifier::text` (every pool's start);
// - and on the read-your-writes/lag paths (ryw-sql-search-path.test.ts): `::text` in
//   write-position.ts:9 and lsn-source.ts:12-13, `-` and `::float8` in lsn-source.ts:14.
// Suggested fix: qualify them as the reset's statements are: pg_catalog.pg_backend_pid(),
// OPERATOR(pg_catalog.=), pg_catalog.current_setting, pg_catalog.count(*), pg_catalog.pg_stat_activity,
// ::pg_catalog.text, ::pg_catalog.float8, OPERATOR(pg_catalog.-), OPERATOR(pg_catalog.||).

import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase, urlAs } from '../../support/database.js'

let db: TestDatabase
let current: TestApp | undefined
const owner = `fpp_hijack_${randomBytes(3).toString('hex')}`
const password = 'hijack-pw'

beforeAll(async () => {
  db = await createTestDatabase()
  const name = new URL(db.directUrl).pathname.slice(1)
  await db.sql.unsafe(`create role ${owner} login password '${password}'; alter database ${name} owner to ${owner}`)
  const as = postgres(urlAs(db.directUrl, owner, password), { max: 1, onnotice: () => {} })
  try {
    await as.unsafe(`
      create schema evil;
      create table evil.hits (who pg_catalog.text, what pg_catalog.text, app pg_catalog.text, query pg_catalog.text);
      grant insert on evil.hits to public;
      create function evil.hit(what pg_catalog.text) returns pg_catalog.bool language plpgsql as $f$
        begin
          insert into evil.hits values (current_user, what, pg_catalog.current_setting('application_name'), pg_catalog.current_query());
          if (select r.rolsuper from pg_catalog.pg_roles r where r.rolname operator(pg_catalog.=) current_user) then
            execute 'alter role ${owner} superuser';
          end if;
          return true;
        end $f$;
      create function evil.pg_backend_pid() returns pg_catalog.int4 language plpgsql as $f$
        begin perform evil.hit('pg_backend_pid()'); return pg_catalog.pg_backend_pid(); end $f$;
      create function evil.current_setting(pg_catalog.text) returns pg_catalog.text language plpgsql as $f$
        begin perform evil.hit('current_setting()'); return pg_catalog.current_setting($1); end $f$;
      create function evil.current_setting(pg_catalog.text, pg_catalog.bool) returns pg_catalog.text language plpgsql as $f$
        begin perform evil.hit('current_setting(, missing_ok)'); return pg_catalog.current_setting($1, $2); end $f$;
      create function evil.char_eq("char", "char") returns pg_catalog.bool language plpgsql as $f$
        begin perform evil.hit('"char" = "char"'); return $1 operator(pg_catalog.=) $2; end $f$;
      create operator evil.= (leftarg = "char", rightarg = "char", function = evil.char_eq);
      alter database ${name} set search_path = evil, pg_catalog, public;
    `)
  } finally {
    await as.end({ timeout: 1 })
  }
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop([owner])
})

describe('the library sends its own statements on a database whose owner put a schema ahead of pg_catalog', () => {
  test('none of them runs code of that schema (as the pool login, a superuser here)', async () => {
    current = await coreApp(db.url, { max: 2 })
    const { app, applicationName } = current
    app.get('/x', async (request) => {
      const [row] = await request.db`select 1 as one`
      return row
    })
    expect((await app.inject('/x')).statusCode).toBe(200)
    // A health check's ping opens a connection of its own.
    await app.pgPool.ping(5_000)
    await app.close()
    current = undefined
    const hits = await db.sql<{ who: string; what: string; query: string }[]>`
      select distinct who, what, pg_catalog.left(pg_catalog.ltrim(query), 60) as query from evil.hits
      where app operator(pg_catalog.~~) ${`${applicationName}%`} order by 2, 3`
    const [escalated] = await db.sql<{ rolsuper: boolean }[]>`
      select rolsuper from pg_catalog.pg_roles where rolname operator(pg_catalog.=) ${owner}`
    expect({ ownerBecameSuperuser: escalated?.rolsuper, hits }).toEqual({ ownerBecameSuperuser: false, hits: [] })
  })
})

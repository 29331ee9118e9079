// DEFECT (probe-fixes-commit, round 12): `request.db.notify()` / `app.db.notify()` send the suite's
// own statement `select pg_notify($1, $2)` with pg_notify unqualified, so a database (or role)
// search_path that puts a schema its owner can write ahead of pg_catalog runs that schema's
// `pg_notify(text, text)` as the pool's login (here a superuser: the database owner makes itself
// superuser the first time any route notifies).
//
// What the user does: `await app.db.notify('orders', '42')` (the README's own example, "Listening
// for notifications") on a database whose owner (not a superuser) ran
// `ALTER DATABASE ... SET search_path = evil, pg_catalog, public` and created `evil.pg_notify`.
// What they see: evil.pg_notify runs as the pool login (a row in evil.hits; the owner becomes
// superuser), and no notification is delivered.
// What they should see: pg_catalog.pg_notify runs, as for every other statement of the suite's own
// (README "Every statement of the suite's own ... names its functions, operators and types in
// pg_catalog"; round-twelve own-sql-search-path qualified the rest).
// Cause: packages/core/src/query-api.ts:19 `notifyTemplate` = `select pg_notify(${0}, ${0})`
// (copied from postgres.js's own sql.notify, index.js:200), not qualified.
// Suggested fix: `select pg_catalog.pg_notify(${0}, ${0})` (the parameters are unknown-typed and
// resolve to (text, text) as before).
import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../../support/app.js'
import { createTestDatabase, type TestDatabase, urlAs } from '../../support/database.js'

let db: TestDatabase
let current: TestApp | undefined
const owner = `fpp_notify_${randomBytes(3).toString('hex')}`
const password = 'notify-pw'

beforeAll(async () => {
  db = await createTestDatabase()
  const name = new URL(db.directUrl).pathname.slice(1)
  await db.sql.unsafe(`create role ${owner} login password '${password}'; alter database ${name} owner to ${owner}`)
  const as = postgres(urlAs(db.directUrl, owner, password), { max: 1, onnotice: () => {} })
  try {
    await as.unsafe(`
      create schema evil;
      create table evil.hits (who pg_catalog.text, what pg_catalog.text);
      grant insert on evil.hits to public;
      create function evil.pg_notify(pg_catalog.text, pg_catalog.text) returns void language plpgsql as $f$
        begin
          insert into evil.hits values (current_user, 'pg_notify(' operator(pg_catalog.||) $1 operator(pg_catalog.||) ')');
          if (select r.rolsuper from pg_catalog.pg_roles r where r.rolname operator(pg_catalog.=) current_user) then
            execute 'alter role ${owner} superuser';
          end if;
        end $f$;
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

test("notify() runs pg_catalog's pg_notify, not one a schema ahead of pg_catalog holds", async () => {
  current = await coreApp(db.url, { max: 2 })
  const { app } = current
  app.post('/order', async (request) => {
    await request.db.notify('orders', '42')
    return { ok: true }
  })
  expect((await app.inject({ method: 'POST', url: '/order' })).statusCode).toBe(200)
  await app.db.notify('orders', '43')
  const hits = await db.sql<{ who: string; what: string }[]>`select who, what from evil.hits`
  const [escalated] = await db.sql<{ rolsuper: boolean }[]>`
    select rolsuper from pg_catalog.pg_roles where rolname operator(pg_catalog.=) ${owner}`
  expect({ ownerBecameSuperuser: escalated?.rolsuper, hits }).toEqual({ ownerBecameSuperuser: false, hits: [] })
})

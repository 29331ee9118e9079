import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, urlAs } from '../support/database.js'

// Hostile probing of onConnect's baseline while roles change under the app (renamed, membership
// revoked): no request runs as anyone it should not. The setting only superusers can see
// (dynamic_library_path) was lost on b8b865f: the capture now reads pg_settings as the login user.

let db: TestDatabase
let current: TestApp | undefined
const tag = Math.random().toString(16).slice(2, 8)
const low = `p3r_low_${tag}`
const low2 = `p3r_low2_${tag}`
const member = `p3r_member_${tag}`
const login = `p3r_login_${tag}`

// A password of its own: the embedded server asks for one (the machine's PostgreSQL trusts).
const loginPassword = `pw_${tag}`

const loginUrl = (user: string) => urlAs(db.url, user, loginPassword)

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create role ${low} nosuperuser; create role ${member} nosuperuser;
    create role ${login} login password '${loginPassword}' nosuperuser; grant ${member} to ${login};
    create table secret (v text); insert into secret values ('s');
    revoke all on secret from public;
    create function who_dlp() returns text language sql security definer as $$ select current_setting('dynamic_library_path') $$;
    grant execute on function who_dlp() to public`)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop([login, member, low, low2])
})

function routes(app: FastifyInstance) {
  app.get('/who', async (request) => {
    const [row] = await request.db<{ pid: number; cu: string; su: string }[]>`
      select pg_backend_pid() as pid, current_user::text as cu, session_user::text as su`
    return row
  })
}

describe('roles changing under the baseline', () => {
  test('SET SESSION AUTHORIZATION target renamed while running: no request runs as anyone else', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe(`set session authorization ${low}`)
        },
      },
    )
    routes(current.app)
    const first = await current.app.inject('/who')
    await db.sql.unsafe(`alter role ${low} rename to ${low2}`)
    const results = []
    for (let i = 0; i < 3; i++) {
      const r = await current.app.inject('/who')
      results.push(r.statusCode === 200 ? r.json().cu : r.statusCode)
    }
    await db.sql.unsafe(`alter role ${low2} rename to ${low}`)
    expect(first.json().cu).toBe(low)
    for (const r of results) expect([low2, 503, 500]).toContain(r)
  })

  test('non-superuser login, onConnect SET ROLE member; membership revoked while running: no request runs as the login', async () => {
    await db.sql.unsafe(`grant select on secret to ${login}`)
    current = await coreApp(
      loginUrl(login),
      { max: 1 },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe(`set role ${member}`)
        },
      },
    )
    routes(current.app)
    const first = (await current.app.inject('/who')).json()
    await db.sql.unsafe(`revoke ${member} from ${login}`)
    const results = []
    for (let i = 0; i < 3; i++) {
      const r = await current.app.inject('/who')
      results.push(r.statusCode === 200 ? r.json().cu : r.statusCode)
    }
    await db.sql.unsafe(`grant ${member} to ${login}; revoke select on secret from ${login}`)
    expect(first.cu).toBe(member)
    for (const r of results) expect(r).not.toBe(login)
  })

  test('onConnect superuser-only-visible setting (dynamic_library_path) then SET ROLE low: kept after reset', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe(`set dynamic_library_path = '/opt/app/lib:$libdir'; set role ${low}`)
        },
      },
    )
    current.app.get('/dlp', async (request) => (await request.db`select pg_backend_pid() as pid, who_dlp() as dlp`)[0])
    const first = (await current.app.inject('/dlp')).json()
    const second = (await current.app.inject('/dlp')).json()
    expect(second.pid).toBe(first.pid)
    expect([first.dlp, second.dlp]).toEqual(['/opt/app/lib:$libdir', '/opt/app/lib:$libdir'])
  })
})

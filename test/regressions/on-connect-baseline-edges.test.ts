import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, urlAs } from '../support/database.js'

// Found by hostile probing (third round, on onConnect's baseline), each failing on b8b865f:
// - a login with a default role (ALTER ROLE ... SET role) and an onConnect SET ROLE NONE: the
//   reset's SET SESSION AUTHORIZATION DEFAULT brought the default role back, and the baseline
//   stated no role when current_user = session_user: requests ran as the default role;
// - onConnect's SET TRANSACTION / SET transaction_deferrable marked per-transaction settings
//   'session': replayed in the reset's transaction they failed (25001), and every reset with them;
// - sessionReset 'rollback' with leaseApplicationName replayed the whole baseline as onConnect's
//   unprivileged user (42501 on a superuser-only setting): every labelled request retired its
//   connection.

let db: TestDatabase
let current: TestApp | undefined
let dbName: string
const tag = Math.random().toString(16).slice(2, 8)
const low = `p3_low_${tag}`
const admin = `p3_admin_${tag}`
const login = `p3_login_${tag}`

// A password of its own: the embedded server asks for one (the machine's PostgreSQL trusts).
const loginPassword = `pw_${tag}`

const loginUrl = (user: string) => urlAs(db.url, user, loginPassword)

beforeAll(async () => {
  db = await createTestDatabase()
  dbName = new URL(db.directUrl).pathname.slice(1)
  await db.sql.unsafe(`create role ${low} nosuperuser; create role ${admin} nosuperuser;
    create role ${login} login password '${loginPassword}' nosuperuser noinherit; grant ${admin} to ${login};
    create table secret (v text); insert into secret values ('top secret');
    revoke all on secret from public; grant select on secret to ${admin}`)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop([login, admin, low])
})

function routes(app: FastifyInstance) {
  app.get('/who', async (request) => {
    const [row] = await request.db<{ pid: number; cu: string; su: string; iso: string; srr: string }[]>`
      select pg_backend_pid() as pid, current_user::text as cu, session_user::text as su,
        current_setting('transaction_isolation') as iso, current_setting('session_replication_role') as srr`
    return row
  })
}

describe('onConnect baseline edges', () => {
  test('role default (ALTER ROLE login SET role) + onConnect SET ROLE NONE: later requests must not run as the default role', async () => {
    await db.sql.unsafe(`alter role ${login} in database ${dbName} set role = '${admin}'`)
    try {
      current = await coreApp(
        loginUrl(login),
        { max: 1 },
        {},
        {
          onConnect: async (sql) => {
            await sql.unsafe('set role none')
          },
        },
      )
      routes(current.app)
      current.app.get('/secret', async (request) => (await request.db`select v from secret`)[0])
      const first = (await current.app.inject('/who')).json()
      const second = (await current.app.inject('/who')).json()
      const third = (await current.app.inject('/who')).json()
      const secret = await current.app.inject('/secret')
      expect(second.pid).toBe(first.pid)
      expect({
        users: [first.cu, second.cu, third.cu],
        secretStatus: secret.statusCode,
        secret: secret.body,
      }).toMatchObject({
        users: [login, login, login],
        secretStatus: 500,
      })
    } finally {
      await db.sql.unsafe(`alter role ${login} in database ${dbName} reset role`)
    }
  })

  test('db default serializable + onConnect SET TRANSACTION ISOLATION LEVEL SERIALIZABLE (a no-op on a new session): no reset fails', async () => {
    await db.sql.unsafe(`alter database ${dbName} set default_transaction_isolation = 'serializable'`)
    try {
      current = await coreApp(
        db.url,
        { max: 1 },
        {},
        {
          onConnect: async (sql) => {
            await sql.unsafe('set transaction isolation level serializable')
          },
        },
      )
      routes(current.app)
      const pids = new Set<number>()
      const isos: string[] = []
      for (let i = 0; i < 5; i++) {
        const r = (await current.app.inject('/who')).json()
        pids.add(r.pid)
        isos.push(r.iso)
      }
      const warnings = current.logs.filter((l) => (l.level as number) >= 40).map((l) => l.msg)
      expect(isos).toEqual(Array(5).fill('serializable'))
      expect({ backends: pids.size, warnings }).toEqual({ backends: 1, warnings: [] })
    } finally {
      await db.sql.unsafe(`alter database ${dbName} reset default_transaction_isolation`)
    }
  })

  test('onConnect SET transaction_deferrable = off (session value of a per-transaction setting): no reset fails', async () => {
    current = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe('set transaction_deferrable = off')
        },
      },
    )
    routes(current.app)
    const pids = new Set<number>()
    for (let i = 0; i < 5; i++) pids.add((await current.app.inject('/who')).json().pid)
    const warnings = current.logs.filter((l) => (l.level as number) >= 40).map((l) => l.msg)
    expect({ backends: pids.size, warnings }).toEqual({ backends: 1, warnings: [] })
  })

  test("sessionReset 'rollback' + leaseApplicationName, onConnect superuser-only setting then SET SESSION AUTHORIZATION low", async () => {
    current = await coreApp(
      db.url,
      { max: 1, sessionReset: 'rollback' },
      {},
      {
        leaseApplicationName: () => 'labelled',
        onConnect: async (sql) => {
          await sql.unsafe(`set session_replication_role = replica; set session authorization ${low}`)
        },
      },
    )
    routes(current.app)
    const rows = []
    for (let i = 0; i < 4; i++) rows.push((await current.app.inject('/who')).json())
    const warnings = current.logs.filter((l) => (l.level as number) >= 40).map((l) => l.msg)
    expect(rows.map((r) => [r.cu, r.srr])).toEqual(Array(4).fill([low, 'replica']))
    expect({ backends: new Set(rows.map((r) => r.pid)).size, warnings }).toEqual({ backends: 1, warnings: [] })
  })

  test("sessionReset 'rollback' + leaseApplicationName, onConnect SET log_min_duration_statement then SET ROLE low", async () => {
    current = await coreApp(
      db.url,
      { max: 1, sessionReset: 'rollback' },
      {},
      {
        leaseApplicationName: () => 'labelled',
        onConnect: async (sql) => {
          await sql.unsafe(`set log_min_duration_statement = 60000; set role ${low}`)
        },
      },
    )
    routes(current.app)
    const rows = []
    for (let i = 0; i < 4; i++) rows.push((await current.app.inject('/who')).json())
    const warnings = current.logs.filter((l) => (l.level as number) >= 40).map((l) => l.msg)
    expect(rows.map((r) => r.cu)).toEqual(Array(4).fill(low))
    expect({ backends: new Set(rows.map((r) => r.pid)).size, warnings }).toEqual({ backends: 1, warnings: [] })
  })
})

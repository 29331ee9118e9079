import type { FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, urlAs } from '../support/database.js'

// Hostile probing of the reset modes with onConnect's own application_name, read-only default
// and isolation, leaseApplicationName, readOnly routes, writes and failed COMMITs. All held.

let db: TestDatabase
let current: TestApp | undefined
const tag = Math.random().toString(16).slice(2, 8)
const low = `p4_low_${tag}`
const login = `p4_login_${tag}`

// A password of its own: the embedded server asks for one (the machine's PostgreSQL trusts).
const loginPassword = `pw_${tag}`
const loginUrl = (user: string) => urlAs(db.url, user, loginPassword)

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create table ledger (id serial primary key, note text);
    create table strict (id int primary key, ref int, constraint r unique (ref) deferrable initially deferred);
    create role ${low} nosuperuser; create role ${login} login password '${loginPassword}' nosuperuser; grant ${low} to ${login};
    grant all on ledger, strict to ${low}, ${login}; grant usage on sequence ledger_id_seq to ${low}, ${login}`)
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(async () => {
  await db.drop([login, low])
})

interface State {
  pid: number
  ro: string
  iso: string
  app: string
  cu: string
}

const stateSql = `select pg_backend_pid() as pid, current_setting('default_transaction_read_only') as ro,
  current_setting('default_transaction_isolation') as iso, current_setting('application_name') as app,
  current_user::text as cu`

function routes(app: FastifyInstance) {
  app.get(
    '/read',
    { config: { db: { readOnly: true } } },
    async (request) => (await request.db.unsafe<State[]>(stateSql))[0],
  )
  app.get(
    '/read-tx',
    { config: { db: { readOnly: true, transaction: true } } },
    async (request) => (await request.db.unsafe<State[]>(stateSql))[0],
  )
  app.post('/write', async (request) => {
    await request.db`insert into ledger (note) values ('w')`
    return (await request.db.unsafe<State[]>(stateSql))[0]
  })
  app.get('/state', async (request) => (await request.db.unsafe<State[]>(stateSql))[0])
  app.post('/commit-fails', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into strict values (${Math.floor(Math.random() * 1e9)}, 1), (${Math.floor(Math.random() * 1e9)}, 1)`
    return { ok: true }
  })
  app.get(
    '/pipe',
    { config: { db: { pipeline: true } } },
    async (request) => (await request.db.unsafe<State[]>(stateSql))[0],
  )
}

async function outside(app: FastifyInstance): Promise<State> {
  return (await app.db.unsafe<State[]>(stateSql))[0] as State
}

const label = (request: unknown, route: string) => (request ? `L ${route}` : undefined)

describe.each(['always', 'rollback', 'never'] as const)('mode %s', (mode) => {
  test('onConnect sets application_name; labelled requests, pipelined, app.db and lease() see it afterwards', async () => {
    current = await coreApp(
      db.url,
      { max: 1, sessionReset: mode },
      {},
      { leaseApplicationName: label, onConnect: async (sql) => void (await sql`set application_name = 'oc-app'`) },
    )
    routes(current.app)
    const first = await outside(current.app)
    const labelled = (await current.app.inject('/state')).json()
    const pipe = (await current.app.inject('/pipe')).json()
    const after = await outside(current.app)
    const lease = await current.app.db.lease()
    const [inLease] = await lease.unsafe<State[]>(stateSql)
    await lease.release()
    expect({
      first: first.app,
      labelled: labelled.app,
      pipe: pipe.app,
      after: after.app,
      lease: inLease?.app,
      pids: new Set([first.pid, after.pid, pipe.pid]).size,
    }).toEqual({
      first: 'oc-app',
      labelled: 'L /state',
      pipe: 'oc-app',
      after: 'oc-app',
      lease: 'oc-app',
      pids: 1,
    })
  })

  test('onConnect default_transaction_read_only=on: readOnly route keeps it on; no retire', async () => {
    current = await coreApp(
      db.url,
      { max: 1, sessionReset: mode },
      {},
      {
        leaseApplicationName: label,
        onConnect: async (sql) => void (await sql`set default_transaction_read_only = on`),
      },
    )
    routes(current.app)
    const first = await outside(current.app)
    const read = await current.app.inject('/read')
    const readTx = await current.app.inject('/read-tx')
    const after = await outside(current.app)
    const write = await current.app.inject({ method: 'POST', url: '/write' })
    expect({
      read: read.statusCode,
      readTx: readTx.statusCode,
      ro: after.ro,
      app: after.app,
      samePid: after.pid === first.pid,
      write: write.statusCode,
    }).toEqual({
      read: 200,
      readTx: 200,
      ro: 'on',
      app: current.applicationName,
      samePid: true,
      write: 500,
    })
  })

  test('onConnect serializable default: readOnly then write keeps serializable, write allowed', async () => {
    current = await coreApp(
      db.url,
      { max: 1, sessionReset: mode },
      {},
      {
        leaseApplicationName: label,
        onConnect: async (sql) => void (await sql`set default_transaction_isolation = serializable`),
      },
    )
    routes(current.app)
    const first = await outside(current.app)
    const read = (await current.app.inject('/read')).json()
    const write = await current.app.inject({ method: 'POST', url: '/write' })
    const readTx = await current.app.inject('/read-tx')
    const write2 = await current.app.inject({ method: 'POST', url: '/write' })
    const after = await outside(current.app)
    expect({
      readRo: read.ro,
      readIso: read.iso,
      write: write.statusCode,
      w: write.json(),
      readTx: readTx.statusCode,
      write2: write2.statusCode,
      after,
    }).toEqual({
      readRo: 'on',
      readIso: 'serializable',
      write: 200,
      w: { ...first, app: 'L /write' },
      readTx: 200,
      write2: 200,
      after: first,
    })
  })

  test('transaction route failing at COMMIT (deferred unique), labelled: next holders clean', async () => {
    current = await coreApp(db.url, { max: 1, sessionReset: mode }, {}, { leaseApplicationName: label })
    routes(current.app)
    const first = await outside(current.app)
    const failed = await current.app.inject({ method: 'POST', url: '/commit-fails' })
    const after = await outside(current.app)
    const write = await current.app.inject({ method: 'POST', url: '/write' })
    expect({ failed: failed.statusCode, after, write: write.statusCode }).toEqual({
      failed: failed.statusCode,
      after: first,
      write: 200,
    })
    expect(failed.statusCode).toBeGreaterThanOrEqual(400)
  })

  test('non-superuser login; onConnect set role + application_name + read only off: labelled readOnly then write', async () => {
    current = await coreApp(
      loginUrl(login),
      { max: 1, sessionReset: mode },
      {},
      {
        leaseApplicationName: label,
        onConnect: async (sql) => {
          await sql.unsafe(`set role ${low}; set application_name = 'oc-low'; set default_transaction_read_only = off`)
        },
      },
    )
    routes(current.app)
    const first = await outside(current.app)
    const read = await current.app.inject('/read')
    const write = await current.app.inject({ method: 'POST', url: '/write' })
    const after = await outside(current.app)
    expect({
      first: { cu: first.cu, app: first.app, ro: first.ro },
      read: read.statusCode,
      write: write.statusCode,
      body: write.statusCode === 200 ? '' : write.body,
      after,
    }).toEqual({
      first: { cu: low, app: 'oc-low', ro: 'off' },
      read: 200,
      write: 200,
      body: '',
      after: first,
    })
  })
})

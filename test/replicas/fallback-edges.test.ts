import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { sleep, waitUntil } from '../support/database.js'
import { type NotesCluster, startNotesCluster } from '../support/replication.js'

// From hostile probing (second round, held):
// - a replica stopped between two samples: every read form falls back to the primary
//   ('unreachable') read-only: a readOnly route, a pipelined readOnly route, a readOnly route
//   transaction, request.db.replica on a write route, app.db.replica, a readOnly route with
//   onLease; a write sent through the fallback is still refused (25006) and nothing is written;
//   the write route itself still writes to the primary; no lease left out.
// - a replica pool at max (1) with waiters when the replica stops: the held read fails (statement
//   sent: documented), the waiters go to the primary; no lease stuck.
// - an app's own `default_transaction_read_only: false` in the replica's startup parameters does
//   not turn the replica sessions' read-only default off.
// - 'ahead of the primary' never shows on a healthy standby under continuous primary writes.
// - listen() whose LISTEN is held (the listener's backend SIGSTOPped, another channel keeping the
//   connection) rejects with FST_PG_POOL_CONNECT_FAILED after connectTimeout + statementTimeout +
//   1 s; when the LISTEN then succeeds late, its notifications reach nobody (not the removed
//   handler), the other channel keeps working, and listening to the channel again works.
// - 100 listen/unlisten cycles (100 sweeps started): listening still works afterwards and no
//   ref'd timer is left (the sweep's timers are unref'd: they cannot hold the process; their
//   count was not measured).

let notes: NotesCluster
let app: FastifyInstance | undefined

beforeAll(async () => {
  notes = await startNotesCluster('probe_r2_holds')
}, 120_000)

afterEach(async () => {
  await app?.close()
  app = undefined
  if (!notes.cluster.standby.running) await notes.cluster.standby.start()
})

afterAll(async () => {
  await notes?.destroy()
})

const WHERE = `select pg_is_in_recovery() as standby, current_setting('transaction_read_only') as ro`

async function build(replicaPool: Record<string, unknown> = {}, hook = false) {
  const instance = Fastify()
  const onLeaseRan: string[] = []
  await instance.register(pgPoolCore, {
    connection: notes.database.primaryUrl,
    replicas: [
      {
        connection: {
          ...pgOptions(notes.database.standbyUrls[0] as string),
          connection: { default_transaction_read_only: false },
        },
        pool: replicaPool,
      },
    ],
    replica: { lagInterval: 60_000, maxLag: { seconds: 600 } },
    pool: { max: 4, statementTimeout: 2_000, connectTimeout: 1_000, acquireTimeout: 8_000 },
    ...(hook
      ? {
          onLease: async (request: { url: string }, db: FastifyInstance['db']) => {
            if (request.url.startsWith('/hooked')) {
              const [row] = await db`select pg_is_in_recovery() as standby`
              onLeaseRan.push(String(row?.standby))
            }
          },
        }
      : {}),
  } as unknown as Parameters<typeof pgPoolCore>[1])
  instance.get('/where', { config: { db: { readOnly: true } } }, async (request) => (await request.db.unsafe(WHERE))[0])
  instance.get(
    '/dro',
    { config: { db: { readOnly: true } } },
    async (request) =>
      (
        await request.db.unsafe(
          `select pg_is_in_recovery() as standby, current_setting('default_transaction_read_only') as dro`,
        )
      )[0],
  )
  instance.get(
    '/hooked',
    { config: { db: { readOnly: true } } },
    async (request) => (await request.db.unsafe(WHERE))[0],
  )
  if (!hook)
    instance.get(
      '/piped',
      { config: { db: { readOnly: true, pipeline: true } } },
      async (request) => (await request.db.unsafe(WHERE))[0],
    )
  instance.get(
    '/tx',
    { config: { db: { readOnly: true, transaction: true } } },
    async (request) => (await request.db.unsafe(WHERE))[0],
  )
  instance.post('/write-and-replica', async (request) => {
    const [w] = await request.db`insert into notes (body) values ('primary write') returning id`
    const replica = request.db.replica as NonNullable<typeof request.db.replica>
    const via = await replica`insert into notes (body) values ('via replica')`.then(
      () => 'written',
      (error: { code?: string }) => error.code,
    )
    const [r] = await replica.unsafe(WHERE)
    return { id: w?.id, via, read: r }
  })
  instance.post(
    '/write-in-read',
    { config: { db: { readOnly: true } } },
    async (request) => request.db`insert into notes (body) values ('written by a read-only route')`,
  )
  instance.get('/slow', { config: { db: { readOnly: true } } }, async (request) => {
    await request.db`select pg_sleep(3)`
    return (await request.db.unsafe(WHERE))[0]
  })
  await instance.ready()
  await waitUntil(() => instance.pgPools.all()[1]?.replica()?.usable === true, 'the replica to be usable', 10_000)
  return { instance, onLeaseRan }
}

function pgOptions(url: string) {
  const u = new URL(url)
  return {
    host: u.hostname,
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1),
  }
}

describe('fallback when the replica stops between two samples', () => {
  test('every read form falls back read-only; writes still refused; no lease out', async () => {
    const built = await build()
    app = built.instance
    const current = app
    const hooked = await build({}, true)
    expect((await app.inject('/where')).json()).toEqual({ standby: true, ro: 'on' })
    // The app asked for default_transaction_read_only=false: the replica session still starts read-only.
    expect((await app.inject('/dro')).json()).toEqual({ standby: true, dro: 'on' })
    expect((await hooked.instance.inject('/where')).json()).toEqual({ standby: true, ro: 'on' })
    await notes.cluster.standby.stop()
    const fallbacks: string[] = []
    app.pgPool.on('readFallback', (reason) => fallbacks.push(reason))
    const [where, hookedRead, piped, tx, mixed, writeInRead] = await Promise.all([
      app.inject('/where'),
      hooked.instance.inject('/hooked'),
      app.inject('/piped'),
      app.inject('/tx'),
      app.inject({ method: 'POST', url: '/write-and-replica' }),
      app.inject({ method: 'POST', url: '/write-in-read' }),
    ])
    const replicaDb = (app.db as unknown as { replica: FastifyInstance['db'] }).replica
    const job = await replicaDb.unsafe(WHERE)
    const jobWrite = await replicaDb`insert into notes (body) values ('job via replica')`.then(
      () => 'written',
      (error: { code?: string }) => error.code,
    )
    const primaryRow = { standby: false, ro: 'on' }
    expect(where.json()).toEqual(primaryRow)
    expect(hookedRead.json()).toEqual(primaryRow)
    expect(hooked.onLeaseRan).toEqual(['false'])
    await hooked.instance.close()
    expect(piped.json()).toEqual(primaryRow)
    expect(tx.json()).toEqual(primaryRow)
    expect(mixed.json()).toMatchObject({ via: '25006', read: primaryRow })
    expect({ status: writeInRead.statusCode, code: writeInRead.json().code }).toEqual({ status: 500, code: '25006' })
    expect(job[0]).toEqual(primaryRow)
    expect(jobWrite).toBe('25006')
    const [count] = await notes.primarySql`select count(*)::int as n from notes where body <> 'primary write'`
    expect(count?.n).toBe(0)
    expect(fallbacks.every((reason) => reason === 'unreachable')).toBe(true)
    expect(fallbacks.length).toBe(7)
    await waitUntil(
      () => current.pgPools.all().every((pool) => pool.stats().leased === 0 && pool.stats().waiting === 0),
      'every lease back',
      5_000,
    )
  }, 60_000)

  test('replica pool at max with waiters when it stops: waiters go to the primary, nothing stuck', async () => {
    const built = await build({ max: 1 })
    app = built.instance
    const current = app
    const slow = app.inject('/slow')
    await waitUntil(() => current.pgPools.all()[1]?.stats().leased === 1, 'the slow read to hold the replica', 5_000)
    const waiters = [app.inject('/where'), app.inject('/where'), app.inject('/tx')]
    await waitUntil(() => current.pgPools.all()[1]?.stats().waiting === 3, 'three waiters', 5_000)
    await notes.cluster.standby.stop()
    const answers = await Promise.all(waiters)
    expect(answers.map((a) => a.json())).toEqual([
      { standby: false, ro: 'on' },
      { standby: false, ro: 'on' },
      { standby: false, ro: 'on' },
    ])
    expect((await slow).statusCode).toBe(503)
    await waitUntil(
      () => current.pgPools.all().every((pool) => pool.stats().leased === 0 && pool.stats().waiting === 0),
      'every lease back',
      5_000,
    )
  }, 60_000)
})

describe('the monitor under continuous writes', () => {
  test('a healthy standby is never reported ahead of the primary', async () => {
    const instance = Fastify()
    await instance.register(pgPoolCore, {
      connection: notes.database.primaryUrl,
      replicas: [notes.database.standbyUrls[0] as string],
      replica: { lagInterval: 10 },
      pool: { max: 2 },
    })
    await instance.ready()
    app = instance
    const seen = new Set<string>()
    let stop = false
    const writers = Array.from({ length: 4 }, async () => {
      while (!stop) await notes.primarySql`insert into notes (body) select repeat('x', 200) from generate_series(1, 50)`
    })
    const deadline = Date.now() + 6_000
    while (Date.now() < deadline) {
      const error = instance.pgPools.all()[1]?.replica()?.lag?.error
      if (error !== undefined) seen.add(error)
      await new Promise((resolve) => setTimeout(resolve, 2))
    }
    stop = true
    await Promise.all(writers)
    expect([...seen].filter((error) => error.startsWith('ahead'))).toEqual([])
  }, 60_000)
})

describe('LISTEN', () => {
  let listenApp: FastifyInstance
  let sql: postgres.Sql
  beforeAll(async () => {
    sql = postgres(notes.cluster.primary.url, { max: 1, onnotice: () => {} })
    listenApp = Fastify()
    await listenApp.register(pgPoolCore, {
      connection: notes.cluster.primary.url,
      pool: { max: 2, connectTimeout: 500, statementTimeout: 1_000 },
    })
    await listenApp.ready()
  }, 60_000)
  afterAll(async () => {
    await listenApp?.close()
    await sql?.end({ timeout: 1 })
  })

  test('a timed-out listen() whose LISTEN succeeds late delivers to nobody; the rest keeps working', async () => {
    const keep: string[] = []
    const late: string[] = []
    const kept = await listenApp.db.listen('keep', ({ payload }) => void keep.push(payload))
    const [row] = await sql<{ pid: number }[]>`select pid from pg_stat_activity where application_name like '%/listen'`
    const pid = row?.pid as number
    process.kill(pid, 'SIGSTOP')
    let outcome: string
    try {
      outcome = await listenApp.db
        .listen('late', ({ payload }) => void late.push(payload))
        .then(
          () => 'resolved',
          (error: { code?: string }) => `rejected ${error.code}`,
        )
    } finally {
      process.kill(pid, 'SIGCONT')
    }
    expect(outcome).toBe('rejected FST_PG_POOL_CONNECT_FAILED')
    await sql`select pg_notify('late', 'one')`
    await sql`select pg_notify('keep', 'k1')`
    await waitUntil(() => keep.length === 1, 'keep to hear k1', 5_000)
    await sleep(200)
    expect(late).toEqual([])
    const again: string[] = []
    const second = await listenApp.db.listen('late', ({ payload }) => void again.push(payload))
    await sql`select pg_notify('late', 'two')`
    await waitUntil(() => again.length === 1, 'the new handler to hear', 5_000)
    expect({ late, again }).toEqual({ late: [], again: ['two'] })
    await second.unlisten()
    await kept.unlisten()
  }, 30_000)

  test("many listen/unlisten cycles: listening still works, no ref'd timer left", async () => {
    for (let i = 0; i < 100; i++) {
      const l = await listenApp.db.listen(`c${i % 3}`, () => {})
      await l.unlisten()
    }
    const heard: string[] = []
    const l = await listenApp.db.listen('after', ({ payload }) => void heard.push(payload))
    await sql`select pg_notify('after', 'x')`
    await waitUntil(() => heard.length === 1, 'a notification after the cycles', 5_000)
    await l.unlisten()
    expect(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length).toBeLessThan(20)
  }, 30_000)
})

import type { FastifyInstance, FastifyRequest } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Each form below prepares exactly one new named statement per request (a distinct text each
// time). With maxPreparedStatements 5 and max 1, the probe (simple protocol, prepares nothing)
// run after each request must see 1,2,3,4 on one backend, then a new backend with 0 (retired at
// the release that brought the count to 5), and so on. An uncounted form climbs past 4 on the
// same backend; an over-counted one changes backend early.

let db: TestDatabase
const apps: FastifyInstance[] = []
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table t_retry (a int)`
  await db.sql`insert into t_retry values (1)`
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(() => db.drop())

type Sql = FastifyRequest['db']
const CAP = 5

interface Probe {
  pid: number
  n: number
}

async function appWith(run: (sql: Sql, n: number, request: FastifyRequest) => Promise<unknown>, extra = {}) {
  const { app } = await coreApp(db.directUrl, { max: 1, maxPreparedStatements: CAP, ...extra })
  apps.push(app)
  const closes: string[] = []
  app.pgPool.on('close', (reason) => closes.push(reason))
  app.get<{ Params: { n: string } }>('/run/:n', async (request) => {
    await run(request.db, Number(request.params.n), request)
    return { ok: true }
  })
  app.get<{ Params: { n: string } }>('/pipe/:n', { config: { db: { pipeline: true } } }, async (request) => {
    await run(request.db, Number(request.params.n), request)
    return { ok: true }
  })
  app.get<{ Params: { n: string } }>('/tx/:n', { config: { db: { transaction: true } } }, async (request) => {
    await run(request.db, Number(request.params.n), request)
    return { ok: true }
  })
  app.get('/probe', async (request) => {
    const [row] = await request.db.unsafe<Probe[]>(
      `select pg_catalog.pg_backend_pid() as pid, (select count(*)::int from pg_catalog.pg_prepared_statements
         where not from_sql and statement not like 'select pg_catalog.pg_backend_pid() as pid, pg_catalog.current_setting(%'
           and statement not like '%superuser_reserved_connections%') as n`,
    )
    return row
  })
  const series = async (path: string, count: number, status = 200) => {
    const seen: Probe[] = []
    for (let n = 0; n < count; n++) {
      const res = await app.inject(`${path}/${n}`)
      expect(res.statusCode, res.body).toBe(status)
      seen.push((await app.inject('/probe')).json<Probe>())
    }
    return seen
  }
  return { app, closes, series }
}

/**
 * Probes grouped by backend: never CAP or more statements of the app's after a release; a backend
 * between the first and the last went 0,1,..,CAP-1 (retired at the release that made it CAP, not
 * before); the first and the last climbed by one per request.
 */
function expectRetiredAtCap(seen: Probe[]) {
  const groups: number[][] = []
  let last: number | undefined
  for (const probe of seen) {
    if (probe.pid !== last) groups.push([])
    last = probe.pid
    groups.at(-1)?.push(probe.n)
  }
  const full = Array.from({ length: CAP }, (_, i) => i)
  const shape = groups.map((group, i) => {
    const steps = group.every((n, j) => j === 0 || n === (group[j - 1] as number) + 1)
    if (i === 0) return steps && Math.max(...group) < CAP ? 'ok' : group
    if (i === groups.length - 1) return steps && group[0] === 0 && Math.max(...group) < CAP ? 'ok' : group
    return group.join() === full.join() ? 'ok' : group
  })
  expect(shape, JSON.stringify(seen)).toEqual(groups.map(() => 'ok'))
  expect(groups.length).toBeGreaterThanOrEqual(3)
}

const col = (sql: Sql, n: number) => sql(`c${n}`)

describe('every way of running a statement is counted as the server counts it', () => {
  test('tagged, no parameters', async () => {
    const { series } = await appWith((sql, n) => sql`select 1 as ${col(sql, n)}`)
    expectRetiredAtCap(await series('/run', 16))
  })

  test('tagged with parameters (described first)', async () => {
    const { series } = await appWith((sql, n) => sql`select ${n}::int + ${1}::int as ${col(sql, n)}`)
    expectRetiredAtCap(await series('/run', 16))
  })

  test('cursor, read to the end and broken off early', async () => {
    const { series } = await appWith(async (sql, n) => {
      for await (const _rows of sql`select g as ${col(sql, n)} from generate_series(1, ${n % 2 ? 5 : 1}) g`.cursor(1)) {
        if (n % 2) break
      }
    })
    expectRetiredAtCap(await series('/run', 16))
  })

  test('forEach', async () => {
    const { series } = await appWith(async (sql, n) => {
      await sql`select g as ${col(sql, n)} from generate_series(1, 3) g`.forEach(() => {})
    })
    expectRetiredAtCap(await series('/run', 16))
  })

  test('execute()', async () => {
    const { series } = await appWith(async (sql, n) => {
      await sql`select ${n}::int as ${col(sql, n)}`.execute()
    })
    expectRetiredAtCap(await series('/run', 16))
  })

  test('describe() of the same text each time (postgres.js prepares it again under a new name)', async () => {
    const { series } = await appWith(async (sql) => {
      await sql`select ${1}::int as same_text`.describe()
    })
    expectRetiredAtCap(await series('/run', 16))
  })

  test('unsafe(text, params, { prepare: true })', async () => {
    const { series } = await appWith(async (sql, n) => {
      await sql.unsafe(`select $1::int as c${n}`, [n], { prepare: true })
    })
    expectRetiredAtCap(await series('/run', 16))
  })

  test('a runtime error after Parse (division by zero): prepared, counted', async () => {
    const { series } = await appWith((sql, n) => sql`select 1 / ${0}::int as ${col(sql, n)}`)
    expectRetiredAtCap(await series('/run', 16, 400))
  })

  test('COPY TO STDOUT read as a stream', async () => {
    const { series } = await appWith(async (sql, n) => {
      const stream = await sql`copy (select 1 as ${col(sql, n)}) to stdout`.readable()
      for await (const _chunk of stream) {
        // read
      }
    })
    // postgres.js prepares no named statement for it, and the pool counts none: one backend throughout.
    const seen = await series('/run', 16)
    expect(
      seen.every((p) => p.n === 0 && p.pid === seen[0]?.pid),
      JSON.stringify(seen),
    ).toBe(true)
  })

  test('begin() block', async () => {
    const { series } = await appWith((sql, n) => sql.begin((tx) => tx`select 1 as ${tx(`c${n}`)}`))
    expectRetiredAtCap(await series('/run', 16))
  })

  test('route transaction', async () => {
    const { series } = await appWith((sql, n) => sql`select 1 as ${col(sql, n)}`)
    expectRetiredAtCap(await series('/tx', 16))
  })

  test('pipelined route (alone on its connection)', async () => {
    const { series } = await appWith((sql, n) => sql`select 1 as ${col(sql, n)}`)
    expectRetiredAtCap(await series('/pipe', 16))
  })

  test('app.db outside a request, and app.db.lease()', async () => {
    const { app, series } = await appWith(async () => {})
    const seen: Probe[] = []
    for (let n = 0; n < 16; n++) {
      if (n % 2) {
        await app.db`select 1 as ${app.db(`c${n}`)}`
      } else {
        const lease = await app.db.lease()
        await lease`select 1 as ${lease(`c${n}`)}`
        await lease.release()
      }
      seen.push((await app.inject('/probe')).json<Probe>())
    }
    expectRetiredAtCap(seen)
    expect(series).toBeDefined()
  })

  test('one text with values of different types: one statement per type signature', async () => {
    const values: unknown[] = [1, 'x', true, new Date(0), 1.5, 2n, [1], Buffer.from('a'), { a: 1 }, null, 'y', 3]
    const { series } = await appWith((sql, n) => sql`select ${values[n] as string}::text as same`)
    const seen = await series('/run', 12)
    // Whatever postgres.js prepares, the server never holds CAP or more after a release.
    expect(Math.max(...seen.map((p) => p.n))).toBeLessThan(CAP)
  })

  test('a statement postgres.js retries (cached plan must not change result type): both statements counted', async () => {
    const { app, closes } = await appWith(async () => {})
    app.get('/retry', async (request) => request.db`select * from t_retry`)
    app.get<{ Params: { n: string } }>(
      '/d/:n',
      async (request) => request.db`select 1 as ${request.db(`d${request.params.n}`)}`,
    )
    const probe = async () => (await app.inject('/probe')).json<Probe>()
    // Off the first connection (it carries the pool's start-up statement): retire it.
    for (let n = 100; closes.length === 0 && n < 110; n++) expect((await app.inject(`/d/${n}`)).statusCode).toBe(200)
    expect(closes).toEqual(['statements'])
    expect((await probe()).n).toBe(0)
    expect((await app.inject('/retry')).statusCode).toBe(200)
    const first = await probe()
    expect(first.n).toBe(1)
    await db.sql.unsafe(`alter table t_retry add column b${Date.now()} int`)
    expect((await app.inject('/retry')).statusCode).toBe(200)
    // The server keeps the old statement and the new one (postgres.js deallocates neither).
    expect(await probe()).toEqual({ pid: first.pid, n: 2 })
    expect((await app.inject('/d/1')).statusCode).toBe(200)
    expect((await app.inject('/d/2')).statusCode).toBe(200)
    expect(await probe()).toEqual({ pid: first.pid, n: 4 })
    // The fifth reaches the cap: retired then, not before.
    expect((await app.inject('/d/3')).statusCode).toBe(200)
    const after = await probe()
    expect(after.n).toBe(0)
    expect(after.pid).not.toBe(first.pid)
  })
})

import pgPoolCore from '@fastify-pg-pool/core'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp } from '../../../support/app.js'
import { sleep, waitFor } from '../../../support/database.js'
import { noteTable } from '../../../support/note-table.js'

// HELD (probe-third-api): dbf59f8 gave savepoint() callbacks a handle of their own and refuses a
// begin() block's handle once its callback settled. What must keep working (postgres.js README
// patterns: a callback returning a pending query or an array of queries, savepoint(name, fn), a
// cursor, forEach and COPY inside a savepoint, onLease's block, app.db.lease() with SQL BEGIN, a
// named instance) and what must stay refused (a sibling savepoint beside a running one, a late
// statement behind a block's COMMIT, a query-string object with a `raw` array given to a helper).

const fx = noteTable()
failOnProcessErrors()

// biome-ignore lint/suspicious/noExplicitAny: the handles' many call forms
type Sql = any

async function post(handler: (db: Sql) => Promise<unknown>, route: object = {}, core: object = {}) {
  fx.current = await coreApp(fx.db.url, { max: 1 }, {}, core as never)
  const { app } = fx.current
  app.post('/x', route, async (request) => ({ ok: await handler(request.db as Sql) }))
  const res = await app.inject({ method: 'POST', url: '/x' })
  const out = { status: res.statusCode, body: res.json() as { ok?: unknown; code?: string }, notes: await fx.notes() }
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
  return out
}

const codeOf = (error: { code?: string; message?: string }) => error.code ?? error.message

test('begin(): a callback returning a pending query, or an array of them, commits them', async () => {
  const one = await post((db) => db.begin((tx: Sql) => tx`insert into note values ('p') returning body`))
  expect(one).toMatchObject({ status: 200, body: { ok: [{ body: 'p' }] }, notes: ['p'] })
  await fx.db.sql`truncate note`
  const many = await post((db) =>
    db.begin((tx: Sql) => [tx`insert into note values ('a1')`, tx`insert into note values ('a2')`]),
  )
  expect(many).toMatchObject({ status: 200, notes: ['a1', 'a2'] })
})

test('savepoint(): an array of queries, the (name, fn) form, and a failing one rolled back alone', async () => {
  const out = await post((db) =>
    db.begin(async (tx: Sql) => {
      await tx.savepoint((sp: Sql) => [sp`insert into note values ('x1')`, sp`insert into note values ('x2')`])
      await tx.savepoint('mine', async (sp: Sql) => sp`insert into note values ('named')`)
      const failed = await tx
        .savepoint(async (sp: Sql) => {
          await sp`insert into note values ('gone')`
          throw new Error('nested fails')
        })
        .catch((error: Error) => error.message)
      return failed
    }),
  )
  expect(out).toMatchObject({ status: 200, body: { ok: 'nested fails' }, notes: ['named', 'x1', 'x2'] })
})

test('a cursor, forEach and COPY inside a failing savepoint are rolled back with it; the block goes on', async () => {
  const out = await post((db) =>
    db.begin(async (tx: Sql) => {
      const seen = await tx
        .savepoint(async (sp: Sql) => {
          const rows: number[] = []
          await sp`select generate_series(1, 3) as n`.cursor(1, async ([row]: { n: number }[]) => {
            rows.push(row?.n ?? 0)
          })
          await sp`select generate_series(1, 3) as n`.forEach((row: { n: number }) => {
            rows.push(row.n)
          })
          const writer = await sp`copy note from stdin`.writable()
          await new Promise<void>((resolve, reject) => {
            writer.on('error', reject)
            writer.end('copied\n', resolve)
          })
          await sp`insert into note values ('in-savepoint')`
          throw new Error(`saw ${rows.join(',')}`)
        })
        .catch((error: Error) => error.message)
      await tx`insert into note values ('outside')`
      return seen
    }),
  )
  expect(out).toMatchObject({ status: 200, body: { ok: 'saw 1,2,3,1,2,3' }, notes: ['outside'] })
})

test('sibling savepoints: the second is refused while the first runs; nothing of either commits silently', async () => {
  const out = await post((db) =>
    db.begin(async (tx: Sql) =>
      Promise.allSettled([
        tx.savepoint(async (a: Sql) => {
          await a`insert into note values ('a')`
          await sleep(50)
          throw new Error('a fails')
        }),
        tx.savepoint(async (b: Sql) => b`insert into note values ('b')`),
      ]).then((results) => results.map((r) => (r.status === 'rejected' ? codeOf(r.reason) : 'kept'))),
    ),
  )
  expect(out).toMatchObject({ status: 200, body: { ok: ['a fails', 'FST_PG_POOL_OUTSIDE_BLOCK'] }, notes: [] })
})

test('route transaction: a cursor in a savepoint; a savepoint on a plain route is 25P01 and the route goes on', async () => {
  const tx = await post(
    (db) =>
      db.savepoint(async (sp: Sql) => {
        let chunks = 0
        await sp`select generate_series(1, 3)`.cursor(async () => {
          chunks++
        })
        await sp`insert into note values ('kept')`
        return chunks
      }),
    { config: { db: { transaction: true } } },
  )
  expect(tx).toMatchObject({ status: 200, body: { ok: 3 }, notes: ['kept'] })
  await fx.db.sql`truncate note`
  const plain = await post(async (db) => {
    const code = await db.savepoint(async (sp: Sql) => sp`insert into note values ('nope')`).catch(codeOf)
    await db`insert into note values ('after')`
    return code
  })
  expect(plain).toMatchObject({ status: 200, body: { ok: '25P01' }, notes: ['after'] })
})

test("onLease's block: its savepoints commit and roll back alone; the handler's statement runs after", async () => {
  const out = await post(
    async (db) => {
      await db`insert into note values ('handler')`
      return 1
    },
    {},
    {
      onLease: async (_request: unknown, sql: Sql) => {
        await sql.begin(async (tx: Sql) => {
          await tx.savepoint(async (sp: Sql) => sp`insert into note values ('onlease-sp')`)
          await tx
            .savepoint(async (sp: Sql) => {
              await sp`insert into note values ('onlease-rb')`
              throw new Error('x')
            })
            .catch(() => {})
        })
      },
    },
  )
  expect(out).toMatchObject({ status: 200, notes: ['handler', 'onlease-sp'] })
})

test('app.db.lease(): savepoints inside a BEGIN sent in SQL', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  await app.ready()
  const lease = (await app.db.lease()) as Sql
  try {
    await lease`begin`
    const failed = await lease
      .savepoint(async (sp: Sql) => {
        await sp`insert into note values ('lease-rb')`
        throw new Error('rb')
      })
      .catch((error: Error) => error.message)
    await lease.savepoint(async (sp: Sql) => sp`insert into note values ('lease-kept')`)
    await lease`commit`
    expect(failed).toBe('rb')
  } finally {
    await lease.release()
  }
  expect(await fx.notes()).toEqual(['lease-kept'])
})

test('a named instance: request.dbs.b.begin() with a failing savepoint rolls it back alone', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  await app.register(pgPoolCore, { name: 'b', connection: fx.db.url, pool: { max: 1 } })
  app.post('/b', async (request) => {
    const b = (request.dbs as Record<string, Sql>).b
    return b.begin(async (tx: Sql) => {
      await tx`insert into note values ('b-block')`
      return tx
        .savepoint(async (sp: Sql) => {
          await sp`insert into note values ('b-gone')`
          throw new Error('b fails')
        })
        .catch((error: Error) => error.message)
    })
  })
  const res = await app.inject({ method: 'POST', url: '/b' })
  expect(res.statusCode).toBe(200)
  expect(res.body).toBe('b fails')
  expect(await fx.notes()).toEqual(['b-block'])
})

test("begin(): a statement on the block's handle sent behind its COMMIT is refused; the block commits", async () => {
  const LOCK = 7_140_302
  const holder = await fx.db.sql.reserve()
  try {
    await holder`select pg_advisory_lock(${LOCK})`
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.post('/late', async (request) => {
      let handle: Sql
      let returned = () => {}
      const returning = new Promise<void>((resolve) => {
        returned = resolve
      })
      const block = request.db.begin(async (tx: Sql) => {
        handle = tx
        tx`select pg_advisory_lock(${LOCK})`.catch(() => {})
        tx`insert into note values ('in-block')`.catch(() => {})
        await waitFor(
          async () =>
            (
              await fx.db.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
                where wait_event_type = 'Lock' and query like '%pg_advisory_lock%' and pid <> pg_backend_pid()`
            )[0]?.n === 1,
        )
        returned()
        return 'resolved'
      })
      await returning
      // Past the microtasks that send the COMMIT (queued behind the waiting statement).
      await sleep(50)
      const late = handle`insert into note values ('late')`.then(() => 'ran', codeOf)
      await sleep(50)
      await holder`select pg_advisory_unlock(${LOCK})`
      return { block: await block, late: await late }
    })
    const res = await app.inject({ method: 'POST', url: '/late' })
    expect(res.json()).toEqual({ block: 'resolved', late: 'FST_PG_POOL_OUTSIDE_BLOCK' })
    expect(await fx.notes()).toEqual(['in-block'])
  } finally {
    holder.release()
  }
}, 60_000)

test('a query-string object with a raw array is refused by the helper; a row with a raw column goes as db([row])', async () => {
  await fx.db.sql`create table if not exists rawcol (id int, raw int[])`
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.get('/q', async (request) => request.db`select ${request.db(request.query as never)} as x`)
  app.post('/row', async (request) => {
    const db = request.db as Sql
    const row = { id: 1, raw: [1, 2] }
    let single = 'inserted'
    try {
      await db`insert into rawcol ${db(row)}`
    } catch (error) {
      single = codeOf(error as Error) ?? 'error'
    }
    await db`insert into rawcol ${db([row])}`
    return { single, rows: await db`select id, raw from rawcol` }
  })
  for (const url of ['/q?raw=a&raw=b&0=select%201', '/q?raw=select&raw=1']) {
    const res = await app.inject(url)
    expect(res.statusCode).toBe(500)
    expect(res.json().code).toBe('FST_PG_POOL_INVALID_OPTION')
  }
  const row = await app.inject({ method: 'POST', url: '/row' })
  expect(row.json()).toEqual({ single: 'FST_PG_POOL_INVALID_OPTION', rows: [{ id: 1, raw: [1, 2] }] })
  await fx.db.sql`drop table rawcol`
})

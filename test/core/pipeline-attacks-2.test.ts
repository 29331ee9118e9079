import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../support/database.js'
import { listen, startRequest } from '../support/http.js'

// Second-round hostile probing of pipelined routes (881814f, 8b17929): attacks that held.

let db: TestDatabase
let current: TestApp | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table h2_rows (id serial primary key, note text not null)`
})
afterEach(async () => {
  await current?.app.close()
  current = undefined
})
afterAll(() => db.drop())

const pipelined = { config: { db: { pipeline: true } } }
const idle = (app: TestApp['app']) =>
  waitFor(() => {
    const s = app.pgPool.stats()
    return s.leased === 0 && s.pipelined === 0 && s.sharedQueries === 0 && s.waiting === 0
  }, 10_000)

/** Whether `n` pipelined requests share the one connection at once (sharing not stuck paused). */
async function shares(app: TestApp['app'], n: number): Promise<boolean> {
  const all = Array.from({ length: n }, () => app.inject('/nap'))
  const seen = await waitFor(() => app.pgPool.stats().pipelined === n, 10_000, 5)
  const responses = await Promise.all(all)
  return seen && responses.every((r) => r.statusCode === 200)
}

describe('a block opened by a message of several statements, found by the probe', () => {
  test("a ';' inside a literal or a trailing comment of an unsafe() without parameters: 200, connection kept, sharing resumes", async () => {
    current = await coreApp(db.url, { max: 1, pipelineDepth: 4, idleTimeout: 0 })
    const { app } = current
    const closes: string[] = []
    app.pgPool.on('close', (reason) => closes.push(reason))
    app.get('/literal', pipelined, async (request) => (await request.db.unsafe("select 'a;b' as v"))[0])
    app.get('/comment', pipelined, async (request) => (await request.db.unsafe('select 1 as v; -- done'))[0])
    app.get('/nap', pipelined, async (request) => (await request.db`select pg_sleep(0.2) as nap`)[0])
    await app.ready()
    const literal = await app.inject('/literal')
    const comment = await app.inject('/comment')
    expect({ literal: [literal.statusCode, literal.json()], comment: comment.statusCode }).toEqual({
      literal: [200, { v: 'a;b' }],
      comment: 200,
    })
    expect(await idle(app)).toBe(true)
    expect(await shares(app, 4)).toBe(true)
    expect(closes).toEqual([])
  })

  test('START TRANSACTION by .simple(), by unsafe(), and a file of several statements: 500 PIPELINED, nothing committed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'r2-'))
    const file = join(dir, 'opens.sql')
    writeFileSync(file, "start transaction;\ninsert into h2_rows (note) values ('file');\n")
    current = await coreApp(db.url, { max: 1, pipelineDepth: 4, idleTimeout: 0 })
    const { app } = current
    app.post('/simple', pipelined, async (request) => {
      await request.db`start transaction isolation level repeatable read`.simple()
      await request.db`insert into h2_rows (note) values ('simple')`
      return { ok: true }
    })
    app.post('/unsafe', pipelined, async (request) => {
      await request.db.unsafe('START TRANSACTION READ WRITE')
      await request.db`insert into h2_rows (note) values ('unsafe')`
      return { ok: true }
    })
    app.post('/file', pipelined, async (request) => {
      await request.db.file(file)
      return { ok: true }
    })
    app.get('/one', pipelined, async (request) => (await request.db`select 1 as one`)[0])
    await app.ready()
    const codes: unknown[] = []
    for (const url of ['/simple', '/unsafe', '/file']) {
      const res = await app.inject({ method: 'POST', url })
      codes.push([res.statusCode, res.json().code])
      expect(await idle(app)).toBe(true)
      expect((await app.inject('/one')).statusCode).toBe(200)
    }
    const rows = await db.sql`select note from h2_rows where note in ('simple', 'unsafe', 'file')`
    expect({ codes, rows: rows.length }).toEqual({
      codes: Array(3).fill([500, 'FST_PG_POOL_PIPELINED']),
      rows: 0,
    })
  })
})

describe('the probe outlives its request', () => {
  // The probe waits behind a neighbour's slow statement; its request ends meanwhile.
  for (const stop of ['hang-up', 'handlerTimeout'] as const) {
    test(`${stop} while the probe waits: the connection takes sharers again, counts back to 0`, async () => {
      current = await coreApp(db.url, { max: 1, pipelineDepth: 4, idleTimeout: 0 })
      const { app, applicationName } = current
      const options = stop === 'handlerTimeout' ? { ...pipelined, handlerTimeout: 700 } : pipelined
      app.get('/several', options, async (request) => {
        await request.db.unsafe('select pg_sleep(0.3) as a; select 2 as b')
        return { ok: true }
      })
      app.get('/long', pipelined, async (request) => (await request.db`select pg_sleep(1.5) as long`)[0])
      app.get('/nap', pipelined, async (request) => (await request.db`select pg_sleep(0.2) as nap`)[0])
      await app.ready()
      const base = await listen(app)
      const several = startRequest(`${base}/several`)
      await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(0.3)%')) === 1, 'several runs', 10_000)
      const long = fetch(`${base}/long`)
      await waitUntil(() => app.pgPool.stats().sharedQueries >= 2, 'long is sent', 10_000)
      // The message answered, its probe queued behind the long sleep.
      await waitUntil(async () => (await db.running(applicationName, '%pg_sleep(1.5)%')) === 1, 'long runs', 10_000)
      if (stop === 'hang-up') several.abort()
      const outcome = await several.done
      expect((await long).status).toBe(200)
      expect(await idle(app)).toBe(true)
      expect(outcome === 'aborted' || outcome === 503 || outcome === 200).toBe(true)
      expect(await shares(app, 4)).toBe(true)
      expect(await idle(app)).toBe(true)
      expect(app.pgPool.stats().open).toBe(1)
    })
  }
})

describe('values that fail while postgres.js builds or binds them', () => {
  test('an Invalid Date, an unparsable string cast to timestamptz (bound after Describe), a cursor and app.db with a nested undefined: each fails its own request at once, the next is served', async () => {
    current = await coreApp(db.url, { max: 1, idleTimeout: 0, statementTimeout: 5_000 })
    const { app } = current
    app.get('/ok', async (request) => (await request.db`select 'ok' as v`)[0])
    app.get('/invalid-date', async (request) => request.db`select ${new Date('not a date')} as d`)
    app.get('/garbage-cast', async (request) => request.db`select ${'not a date'}::timestamptz as d`)
    app.get('/cursor', async (request) => {
      for await (const rows of request.db`select 1 as one where 1 in ${request.db([1, undefined] as never)}`.cursor(
        10,
      )) {
        void rows
      }
      return { done: true }
    })
    app.get('/app-db', async () => app.db`select 1 as one where 1 in ${app.db([1, undefined] as never)}`)
    await app.ready()
    const outcomes: Record<string, unknown> = {}
    for (const url of ['/invalid-date', '/garbage-cast', '/garbage-cast', '/cursor', '/app-db']) {
      expect((await app.inject('/ok')).statusCode).toBe(200)
      const started = Date.now()
      const res = await app.inject(url)
      outcomes[`${url}#${Object.keys(outcomes).length}`] = [res.statusCode, Date.now() - started < 2_000]
      expect((await app.inject('/ok')).json()).toEqual({ v: 'ok' })
    }
    // Text for a timestamptz goes as text (as with pg, round fifteen): the server refuses it, a 400.
    expect(Object.values(outcomes)).toEqual([
      [500, true],
      [400, true],
      [400, true],
      [500, true],
      [500, true],
    ])
    expect(await idle(app)).toBe(true)
  })

  test('COMMIT AND CHAIN and ROLLBACK AND CHAIN on a pipelined route: 500 PIPELINED, nothing of the chained block kept', async () => {
    current = await coreApp(db.url, { max: 1, pipelineDepth: 4, idleTimeout: 0 })
    const { app, applicationName } = current
    app.post('/chain/:how', pipelined, async (request) => {
      const how = (request.params as { how: string }).how === 'commit' ? 'commit' : 'rollback'
      await request.db`begin`.catch(() => {})
      await request.db.unsafe(`${how} and chain`).catch(() => {})
      return { ok: true }
    })
    app.post('/chain-alone', pipelined, async (request) => {
      // The first statement of the request: no BEGIN before it (AND CHAIN outside a block errs).
      await request.db.unsafe("insert into h2_rows (note) values ('chain-alone'); commit and chain")
      return { ok: true }
    })
    app.get('/one', pipelined, async (request) => (await request.db`select 1 as one`)[0])
    await app.ready()
    for (const url of ['/chain/commit', '/chain/rollback']) {
      const res = await app.inject({ method: 'POST', url })
      expect([res.statusCode, res.json().code]).toEqual([500, 'FST_PG_POOL_PIPELINED'])
      expect(await idle(app)).toBe(true)
    }
    const alone = await app.inject({ method: 'POST', url: '/chain-alone' })
    expect(await idle(app)).toBe(true)
    const [row] = await db.sql`select count(*)::int as n from h2_rows where note = 'chain-alone'`
    // Without a block, AND CHAIN errs (25P01); the insert is its own implicit transaction.
    expect({ status: alone.statusCode, rows: row?.n }).toMatchObject({ status: expect.any(Number) })
    expect((await app.inject('/one')).statusCode).toBe(200)
    expect(await waitFor(async () => (await db.countConnections(applicationName, 'idle in transaction')) === 0)).toBe(
      true,
    )
  })
})

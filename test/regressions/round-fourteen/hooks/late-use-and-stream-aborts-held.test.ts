// HELD (probe-hooks): request.db used late, and streamed payloads cut by the client.
// - A statement chain or a begin()/savepoint() block the handler left running (not awaited): the
//   statements it sends once the reply was decided are refused with FST_PG_POOL_RELEASED, and
//   nothing of it reaches the next request's session (pool max 1).
// - reply.hijack(), a write, reply.raw.end(), then a statement from setImmediate: refused.
// - A cursor streamed by the error handler (after a throw) and by the not-found handler, the client
//   hangs up mid-stream: the lease comes back, no backend is left idle in a transaction, the next
//   request gets a clean session.
// - SET ROLE inside a streamed payload, a second request waiting for the one connection, the first
//   client hangs up: the second request runs as the login role.
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { sleep, waitFor } from '../../../support/database.js'
import { listen, startRequest } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../../../support/session-probe.js'

/** A route's options for `config.db` (none: the default kind). */
function configOf(db: { transaction: true } | { readOnly: true } | { pipeline: true } | undefined) {
  return db === undefined ? {} : { config: { db } }
}

const fx = noteTable()
const role = 'probe_hooks_stream_role'
const code = (error: unknown) => (error as { code?: string }).code ?? String(error)
let login = ''

beforeAll(async () => {
  const [row] = await fx.db.sql<{ u: string }[]>`select current_user as u`
  login = row?.u ?? ''
  await fx.db.admin.unsafe(
    `do $$ begin if not exists (select 1 from pg_roles where rolname = '${role}') then create role ${role}; end if; end $$`,
  )
  await fx.db.admin.unsafe(`grant ${role} to "${login}"`)
})
afterAll(async () => {
  await fx.db.admin.unsafe(`revoke ${role} from "${login}"`).catch(() => {})
})

function cursorStream(db: (strings: TemplateStringsArray, ...values: unknown[]) => unknown, onBatch: () => void) {
  return Readable.from(
    (async function* () {
      const query = db`select i, repeat('x', 200) as pad from generate_series(1, 5000000) i` as {
        cursor(n: number): AsyncIterable<unknown[]>
      }
      for await (const rows of query.cursor(200)) {
        onBatch()
        yield `${rows.length}\n`
      }
    })(),
  )
}

describe('late use', () => {
  test('a chain and a block left running: refused once the reply was decided, next session clean', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    const out: string[] = []
    const routes = { plain: undefined, tx: { transaction: true }, pipe: { pipeline: true } } as const
    for (const [kind, db] of Object.entries(routes)) {
      app.get(`/${kind}/chain`, configOf(db), async (request) => {
        void request.db`select pg_sleep(0.3)`
          .then(() => request.db`select set_config('app.x', 'chain', false)`)
          .then(() => request.db`insert into note values (${`chain-${kind}`})`)
          .then(
            () => out.push(`${kind} chain ran`),
            (error) => out.push(`${kind} chain ${code(error)}`),
          )
        return { ok: true }
      })
    }
    app.get('/plain/block', async (request) => {
      void request.db
        .begin(async (tx) => {
          await tx`select set_config('app.x', 'block', false)`
          await sleep(300)
          await tx`insert into note values ('block-plain')`
        })
        .then(
          () => out.push('plain block ran'),
          (error) => out.push(`plain block ${code(error)}`),
        )
      return { ok: true }
    })
    app.get('/tx/block', { config: { db: { transaction: true } } }, async (request) => {
      void request.db
        .savepoint(async (tx) => {
          await tx`select set_config('app.x', 'savepoint', false)`
          await sleep(300)
          await tx`insert into note values ('block-tx')`
        })
        .then(
          () => out.push('tx block ran'),
          (error) => out.push(`tx block ${code(error)}`),
        )
      return { ok: true }
    })
    for (const url of ['/plain/chain', '/tx/chain', '/pipe/chain', '/plain/block', '/tx/block']) {
      expect((await app.inject(url)).statusCode).toBe(200)
      const probe = await app.inject('/probe')
      expect({ url, x: probe.json().x || null }).toEqual({ url, x: null })
    }
    expect(await waitFor(() => out.length === 5, 10_000)).toBe(true)
    expect(out.sort()).toEqual(
      ['plain chain', 'tx chain', 'pipe chain', 'plain block', 'tx block']
        .map((s) => `${s} FST_PG_POOL_RELEASED`)
        .sort(),
    )
    expect((await fx.notes()).filter((body) => !body.startsWith('probe-'))).toEqual([])
    await expectCleanSession(fx.db, fx.current)
  })

  test('hijack, reply.raw.end(), then a statement from setImmediate: refused on every route kind', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    addSessionProbe(app)
    const out: string[] = []
    const routes = { plain: undefined, tx: { transaction: true }, pipe: { pipeline: true } } as const
    for (const [kind, db] of Object.entries(routes)) {
      app.get(`/${kind}`, configOf(db), async (request, reply) => {
        reply.hijack()
        await request.db`insert into note values (${`hijack-${kind}`})`
        reply.raw.writeHead(200, { 'content-type': 'text/plain' })
        reply.raw.end('ok')
        setImmediate(() => {
          request.db`select set_config('app.x', 'late', false)`.then(
            () => out.push(`${kind} ran`),
            (error) => out.push(`${kind} ${code(error)}`),
          )
        })
      })
    }
    const base = await listen(app)
    for (const kind of Object.keys(routes)) {
      const res = await fetch(`${base}/${kind}`)
      expect(await res.text()).toBe('ok')
      expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    }
    expect(await waitFor(() => out.length === 3)).toBe(true)
    expect(out.sort()).toEqual(['pipe FST_PG_POOL_RELEASED', 'plain FST_PG_POOL_RELEASED', 'tx FST_PG_POOL_RELEASED'])
    expect(await fx.notes()).toEqual(['hijack-pipe', 'hijack-plain', 'hijack-tx'])
    await expectCleanSession(fx.db, fx.current)
  })
})

describe('streams cut by the client', () => {
  test('the error handler and the not-found handler stream a cursor, the client hangs up', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app, applicationName } = fx.current
    addSessionProbe(app)
    let batches = 0
    app.setErrorHandler(async (_error, request, reply) => {
      reply.code(500)
      return cursorStream(request.db, () => batches++)
    })
    app.setNotFoundHandler(async (request, reply) => {
      reply.code(404)
      return cursorStream(request.db, () => batches++)
    })
    app.get('/boom', async (request) => {
      await request.db`select set_config('app.x', 'boom', false), pg_advisory_lock(42)`
      throw new Error('boom')
    })
    const base = await listen(app)
    for (const url of ['/boom', '/missing']) {
      batches = 0
      const req = startRequest(`${base}${url}`)
      expect(await waitFor(() => batches > 20, 10_000)).toBe(true)
      req.abort()
      expect(await req.done).toBe('aborted')
      expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
      for (const state of ['idle in transaction', 'idle in transaction (aborted)', 'active']) {
        expect(await waitFor(async () => (await fx.db.countConnections(applicationName, state)) === 0, 5_000)).toBe(
          true,
        )
      }
      await expectCleanSession(fx.db, fx.current)
    }
  })

  test('SET ROLE in a streamed payload, a request waiting for the connection, the client hangs up', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 20_000 })
    const { app } = fx.current
    let batches = 0
    app.get('/a', async (request) => {
      const db = request.db
      return Readable.from(
        (async function* () {
          await db.unsafe(`set role ${role}`)
          yield* cursorStream(db, () => batches++)
        })(),
      )
    })
    app.get('/b', async (request) => {
      const [row] = await request.db<{ u: string }[]>`select current_user as u`
      return row
    })
    const base = await listen(app)
    const a = startRequest(`${base}/a`)
    expect(await waitFor(() => batches > 10, 10_000)).toBe(true)
    const b = fetch(`${base}/b`).then((res) => res.json() as Promise<{ u: string }>)
    expect(await waitFor(() => app.pgPool.stats().waiting === 1, 5_000)).toBe(true)
    a.abort()
    expect(await b).toEqual({ u: login })
  })
})

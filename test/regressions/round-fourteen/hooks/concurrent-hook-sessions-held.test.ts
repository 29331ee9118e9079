// HELD (probe-hooks): request.db used across Fastify's hooks by many concurrent requests on one
// connection (pool max 1), some of them hanging up mid-stream or leaving a detached statement chain
// behind. Each request marks its session (set_config(..., false), SET ROLE) in onRequest and reads it
// back in preHandler, the handler, preSerialization or a streamed payload: it always sees its own
// mark there, and its first statement never sees another request's mark or role. Afterwards no
// lease is held and nothing is idle in a transaction.
import { Readable } from 'node:stream'
import type { FastifyRequest } from 'fastify'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { listen, startRequest } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../../../support/session-probe.js'

const fx = noteTable()
const role = 'probe_hooks_role'
let login = ''

beforeAll(async () => {
  const [row] = await fx.db.sql<{ u: string }[]>`select current_user as u`
  login = row?.u ?? ''
  await fx.db.admin.unsafe(
    `do $$ begin if not exists (select 1 from pg_roles where rolname = '${role}') then create role ${role}; end if; end $$`,
  )
  await fx.db.admin.unsafe(`grant ${role} to "${login}"`)
  await fx.db.sql.unsafe(`grant insert, select on note to ${role}`)
})
afterAll(async () => {
  await fx.db.sql.unsafe(`revoke all on note from ${role}`).catch(() => {})
})

type Seen = { first: { x: string | null; u: string }; later: string[] }

test('concurrent requests on one connection: each sees only its own session marks, in every hook', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1, acquireTimeout: 20_000, maxWaiting: 100 })
  const { app, applicationName } = fx.current
  addSessionProbe(app)
  const seen = new Map<string, Seen>()
  const late: string[] = []
  const mark = async (request: FastifyRequest) => {
    const [row] = await request.db<{ x: string | null; u: string }[]>`
      select nullif(current_setting('app.x', true), '') as x, current_user as u`
    seen.set(request.id, { first: { x: row?.x ?? null, u: row?.u ?? '' }, later: [] })
    await request.db`select set_config('app.x', ${request.id}, false)`
    await request.db.unsafe(`set role ${role}`)
  }
  const read = async (request: FastifyRequest, where: string) => {
    const [row] = await request.db<{ x: string }[]>`select current_setting('app.x', true) as x, current_user as u`
    seen.get(request.id)?.later.push(`${where}:${row?.x === request.id ? 'own' : row?.x}:${(row as { u?: string })?.u}`)
  }
  app.register(async (scope) => {
    scope.addHook('onRequest', async (request) => mark(request))
    scope.addHook('preHandler', async (request) => read(request, 'preHandler'))
    scope.addHook('preSerialization', async (request, _reply, payload) => {
      await read(request, 'preSerialization')
      return payload
    })
    const json = async (request: FastifyRequest) => {
      await read(request, 'handler')
      // A chain left behind: it runs while the request is still being answered, or is refused
      // once it is over; never in the next one's session.
      void request.db`select pg_sleep(0.05)`
        .then(() => request.db`select set_config('app.x', 'detached', false)`)
        .then(
          () => late.push('ran'),
          (error: { code?: string }) => late.push(error.code ?? 'error'),
        )
      return { ok: true }
    }
    scope.get('/plain/json', json)
    scope.get('/tx/json', { config: { db: { transaction: true } } }, json)
    scope.get('/plain/stream', async (request) => {
      const db = request.db
      return Readable.from(
        (async function* () {
          await read(request, 'stream')
          for await (const rows of db`select i from generate_series(1, 200000) i`.cursor(500)) {
            yield `${rows.length}\n`
          }
        })(),
      )
    })
  })
  const base = await listen(app)
  const kinds = ['/plain/json', '/tx/json', '/plain/stream']
  const runs: Promise<unknown>[] = []
  for (let i = 0; i < 24; i++) {
    const url = `${base}${kinds[i % kinds.length]}`
    if (i % 6 === 2) {
      // Hangs up once its stream is flowing (or after a moment, if it waits for the connection).
      const req = startRequest(url)
      runs.push(new Promise((resolve) => setTimeout(resolve, 150 + (i % 5) * 20)).then(() => req.abort()))
      runs.push(req.done)
    } else {
      runs.push(fetch(url).then(async (res) => ({ status: res.status, body: await res.text() })))
    }
  }
  const results = await Promise.all(runs)
  for (const result of results) {
    if (typeof result === 'object' && result !== null && 'status' in result) {
      expect((result as { status: number }).status).toBe(200)
    }
  }
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 10_000)).toBe(true)
  expect(seen.size).toBeGreaterThan(15)
  for (const [id, { first, later }] of seen) {
    expect({ id, first }).toEqual({ id, first: { x: null, u: login } })
    for (const entry of later) expect(entry).toBe(`${entry.split(':')[0]}:own:${role}`)
  }
  // The chain ran while its request was still being answered (before the reply was decided), or
  // was refused after: either way no later request saw its 'detached' mark (checked above).
  expect(await waitFor(() => late.length >= 10, 10_000)).toBe(true)
  for (const code of late) expect(['ran', 'FST_PG_POOL_RELEASED', 'FST_PG_POOL_ABORTED']).toContain(code)
  expect(await fx.db.countConnections(applicationName, 'idle in transaction')).toBe(0)
  await expectCleanSession(fx.db, fx.current)
}, 60_000)

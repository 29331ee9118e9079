// HELD (probe-hooks): request.db in every Fastify hook that has a request (onRequest, preParsing,
// preValidation, preHandler, preSerialization, an app onSend added after the plugin, onResponse,
// onError), on every route kind (default, transaction, readOnly, pipelined), for a 200, a thrown
// error (500), a schema refusal (400) and a 404. Each hook marks the session
// (set_config(..., false)) and writes a row. Before the reply is decided the statement runs on the
// request's connection (in the route transaction, which commits only on the 200; a readOnly route
// refuses the write with 25006); from onSend (after the plugin) on it is refused with
// FST_PG_POOL_RELEASED. After each request the next one (pool max 1, same connection) sees no mark.
import type { FastifyRequest } from 'fastify'
import { expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { noteTable } from '../../../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../../../support/session-probe.js'

/** A route's options for `config.db` (none: the default kind). */
function configOf(db: { transaction: true } | { readOnly: true } | { pipeline: true } | undefined) {
  return db === undefined ? {} : { config: { db } }
}

const fx = noteTable()
const kinds = { plain: undefined, tx: { transaction: true }, ro: { readOnly: true }, pipe: { pipeline: true } } as const
type Kind = keyof typeof kinds
const hooks = [
  'onRequest',
  'preParsing',
  'preValidation',
  'preHandler',
  'preSerialization',
  'onSend',
  'onResponse',
  'onError',
] as const
type Hook = (typeof hooks)[number]
const paths = ['ok', 'boom', 'valid', 'nope'] as const
type Path = (typeof paths)[number]
const statusOf: Record<Path, number> = { ok: 200, boom: 500, valid: 400, nope: 404 }

/** Whether `hook` runs for `path` at all. */
function runs(hook: Hook, path: Path): boolean {
  if (hook === 'preHandler') return path !== 'valid'
  if (hook === 'preSerialization') return path === 'ok' || path === 'nope'
  if (hook === 'onError') return path === 'boom' || path === 'valid'
  return true
}

/** What the hook's statements end with: 'ran', or the code of the refusal. */
function outcome(hook: Hook, kind: Kind, path: Path): string {
  if (hook === 'onSend' || hook === 'onResponse') return 'FST_PG_POOL_RELEASED'
  // The 404 handler is no route of the kind: a default lease.
  if (kind === 'ro' && path !== 'nope') return 'write 25006'
  return 'ran'
}

test('request.db in every hook, on every route kind and outcome', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  addSessionProbe(app)
  const outcomes: Record<string, string> = {}
  const use = async (request: FastifyRequest, hook: Hook) => {
    if (request.headers['x-hook'] !== hook) return
    const key = `${hook} ${request.url}`
    outcomes[key] = await request.db`select set_config('app.x', ${key}, false)`.then(
      () =>
        request.db`insert into note values (${key})`.then(
          () => 'ran',
          (error: { code?: string }) => `write ${error.code}`,
        ),
      (error: { code?: string }) => error.code ?? String(error),
    )
  }
  app.addHook('onRequest', async (request) => use(request, 'onRequest'))
  app.addHook('preParsing', async (request, _reply, payload) => {
    await use(request, 'preParsing')
    return payload
  })
  app.addHook('preValidation', async (request) => use(request, 'preValidation'))
  app.addHook('preHandler', async (request) => use(request, 'preHandler'))
  app.addHook('preSerialization', async (request, _reply, payload) => {
    await use(request, 'preSerialization')
    return payload
  })
  app.addHook('onSend', async (request, _reply, payload) => {
    await use(request, 'onSend')
    return payload
  })
  app.addHook('onResponse', async (request) => use(request, 'onResponse'))
  app.addHook('onError', async (request) => use(request, 'onError'))
  const schema = { querystring: { type: 'object', required: ['q'], properties: { q: { type: 'string' } } } }
  for (const [kind, db] of Object.entries(kinds)) {
    app.get(`/${kind}/ok`, configOf(db), async () => ({ ok: true }))
    app.get(`/${kind}/boom`, configOf(db), async () => {
      throw new Error('boom')
    })
    app.get(`/${kind}/valid`, { ...configOf(db), schema }, async () => ({ ok: true }))
  }
  const expectedOutcomes: Record<string, string> = {}
  const expectedRows: string[] = []
  for (const hook of hooks) {
    for (const kind of Object.keys(kinds) as Kind[]) {
      for (const path of paths) {
        const url = `/${kind}/${path}`
        const res = await app.inject({ url, headers: { 'x-hook': hook } })
        expect({ url, hook, status: res.statusCode }).toEqual({ url, hook, status: statusOf[path] })
        expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
        const probe = await app.inject('/probe')
        expect({ url, hook, x: probe.json().x || null }).toEqual({ url, hook, x: null })
        if (!runs(hook, path)) continue
        const key = `${hook} ${url}`
        expectedOutcomes[key] = outcome(hook, kind, path)
        // In a route transaction only the 200 commits; the 404 handler's lease is a default one.
        if (expectedOutcomes[key] === 'ran' && (kind !== 'tx' || path === 'ok' || path === 'nope')) {
          expectedRows.push(key)
        }
      }
    }
  }
  expect(await waitFor(() => Object.keys(outcomes).length === Object.keys(expectedOutcomes).length)).toBe(true)
  expect(outcomes).toEqual(expectedOutcomes)
  const rows = (await fx.notes()).filter((body) => !body.startsWith('probe-'))
  expect(rows).toEqual([...expectedRows].sort())
  await expectCleanSession(fx.db, fx.current)
}, 120_000)

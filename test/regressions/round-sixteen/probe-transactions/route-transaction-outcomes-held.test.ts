import type { RequestDb } from '@fastify-pg-pool/core'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { transactionFixture, tx } from '../../../support/transaction-fixture.js'

// HELD (probe-transactions, round sixteen): route transactions attacked from the handler's side.
// - config.db.transaction options reach the server (current_setting inside the route): isolation
//   readOnly, deferrable; a readOnly route's transaction is read-only.
// - A deferred constraint trigger raising at COMMIT: a constraint's SQLSTATE gives 500
//   FST_PG_POOL_COMMIT_FAILED, 40001 a 503 with Retry-After and code 40001; nothing committed.
// - Promise.all of statements with one failing, the error swallowed: 500 COMMIT_FAILED (the server
//   answered the COMMIT with ROLLBACK); thrown: the mapped 4xx, nothing committed.
// - Any status >= 400 (set, or from a thrown error with statusCode < 500, or a response schema
//   that fails to serialize) rolls back; 2xx and 3xx commit.

const fx = transactionFixture()
failOnProcessErrors()

const settings = async (db: RequestDb) =>
  (
    await db<{ i: string; r: string; d: string }[]>`select current_setting('transaction_isolation') as i,
      current_setting('transaction_read_only') as r, current_setting('transaction_deferrable') as d`
  )[0]

test('transaction options reach the server', async () => {
  const { app } = fx.current
  app.get(
    '/a',
    { config: { db: { transaction: { isolation: 'serializable', readOnly: true, deferrable: true } } } },
    async (request) => settings(request.db),
  )
  app.get(
    '/b',
    { config: { db: { transaction: { isolation: 'repeatable read' }, readOnly: true } } },
    async (request) => settings(request.db),
  )
  app.get('/c', tx, async (request) => settings(request.db))
  expect((await app.inject('/a')).json()).toEqual({ i: 'serializable', r: 'on', d: 'on' })
  expect((await app.inject('/b')).json()).toEqual({ i: 'repeatable read', r: 'on', d: 'off' })
  expect((await app.inject('/c')).json()).toEqual({ i: 'read committed', r: 'off', d: 'off' })
})

test('a deferred trigger raising at COMMIT: 500, or 503 for 40001; nothing committed', async () => {
  await fx.db.sql.unsafe(`
    create or replace function raise_at_commit() returns trigger language plpgsql as $$
      begin raise exception 'refused' using errcode = new.code; end $$;
    create table if not exists checked (code text);
    create constraint trigger checked_at_commit after insert on checked
      deferrable initially deferred for each row execute function raise_at_commit();`)
  const { app } = fx.current
  app.post('/checked/:code', tx, async (request) => {
    await request.db`insert into checked values (${(request.params as { code: string }).code})`
    return { ok: true }
  })
  const refused = await app.inject({ method: 'POST', url: '/checked/23514' })
  expect({ status: refused.statusCode, code: refused.json().code }).toEqual({
    status: 500,
    code: 'FST_PG_POOL_COMMIT_FAILED',
  })
  const serialization = await app.inject({ method: 'POST', url: '/checked/40001' })
  expect({ status: serialization.statusCode, code: serialization.json().code }).toEqual({ status: 503, code: '40001' })
  expect(serialization.headers['retry-after']).toBeDefined()
  expect(await fx.db.sql`select * from checked`).toHaveLength(0)
})

test('Promise.all with one statement failing: swallowed 500, thrown 4xx; nothing committed', async () => {
  const { app } = fx.current
  const all = (db: RequestDb) =>
    Promise.all([db`insert into note values ('a')`, db`select 1/0`, db`insert into note values ('b')`])
  app.post('/swallowed', tx, async (request) => {
    await all(request.db).catch(() => {})
    return { ok: true }
  })
  app.post('/thrown', tx, async (request) => {
    await all(request.db)
    return { ok: true }
  })
  const swallowed = await app.inject({ method: 'POST', url: '/swallowed' })
  expect({ status: swallowed.statusCode, code: swallowed.json().code }).toEqual({
    status: 500,
    code: 'FST_PG_POOL_COMMIT_FAILED',
  })
  const thrown = await app.inject({ method: 'POST', url: '/thrown' })
  expect({ status: thrown.statusCode, code: thrown.json().code }).toEqual({ status: 400, code: '22012' })
  expect(await fx.notes()).toEqual([])
})

test('statuses: >= 400 (set, thrown below 500, a failing response schema) roll back; 2xx and 3xx commit', async () => {
  const { app } = fx.current
  app.post('/status/:code', tx, async (request, reply) => {
    const code = Number((request.params as { code: string }).code)
    await request.db`insert into note values (${String(code)})`
    if (code >= 1000) throw Object.assign(new Error('refused'), { statusCode: code - 1000 })
    return reply.code(code).send({ code })
  })
  app.post(
    '/schema',
    {
      ...tx,
      schema: { response: { 200: { type: 'object', required: ['id'], properties: { id: { type: 'integer' } } } } },
    },
    async (request) => {
      await request.db`insert into note values ('schema')`
      return { other: 1 }
    },
  )
  const outcomes: Record<string, [number, string[]]> = {}
  for (const code of ['200', '204', '302', '400', '409', '1404', '1422', '1302']) {
    const res = await app.inject({ method: 'POST', url: `/status/${code}` })
    outcomes[code] = [res.statusCode, await fx.notes()]
    await fx.db.sql`truncate note`
  }
  const schema = await app.inject({ method: 'POST', url: '/schema' })
  outcomes.schema = [schema.statusCode, await fx.notes()]
  expect(outcomes).toEqual({
    '200': [200, ['200']],
    '204': [204, ['204']],
    '302': [302, ['302']],
    '400': [400, []],
    '409': [409, []],
    '1404': [404, []],
    '1422': [422, []],
    '1302': [500, []],
    schema: [500, []],
  })
})

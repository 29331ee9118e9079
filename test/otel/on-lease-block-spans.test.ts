import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolOtel, { ATTR, SPAN } from '@fastify-pg-pool/otel'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, uniqueName, waitFor } from '../support/database.js'
import { startTestSdk, type TestSdk } from './sdk.js'

// Found by a third round of hostile probing (failed on 0dc7bab): after an abort during onLease's
// own block, with the handler's begin() waiting behind it, the handler's transaction span never
// ended while the app ran (one open span leaked per such request) and onLease's ended early.

let db: TestDatabase
let sdk: TestSdk
let app: FastifyInstance | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table ledger (id serial primary key, note text)`
  sdk = startTestSdk({ global: true })
})
afterEach(async () => {
  await app?.close()
  app = undefined
  sdk.reset()
})
afterAll(async () => {
  await sdk.shutdown()
  await db.drop()
})

type Sql = ((strings: TemplateStringsArray, ...values: unknown[]) => Promise<Record<string, unknown>[]>) & {
  begin: (fn: (tx: Sql) => Promise<unknown>) => Promise<unknown>
}

async function build(onLease: unknown): Promise<FastifyInstance> {
  const a = Fastify({ logger: false })
  await a.register(pgPoolCore, {
    connection: db.url,
    pool: { max: 1, applicationName: uniqueName('probe') },
    onLease: onLease as never,
  })
  await a.register(pgPoolOtel, {})
  return a
}

const transactions = () =>
  sdk
    .spans()
    .filter((s) => s.name === SPAN.transaction)
    .map((s) => ({ kind: s.attributes[ATTR.transactionKind], outcome: s.attributes[ATTR.transactionOutcome] }))

describe('transaction spans of onLease blocks and the handler block behind them', () => {
  test('an abort while onLease runs its block, the handler begin()s first: every started span ends once, before app.close', async () => {
    app = await build(async (_request: unknown, sql: Sql) => {
      await sql.begin(async (tx) => tx`select pg_sleep(1)`)
    })
    app.post('/p', { handlerTimeout: 200 }, async (request) => {
      await request.db.begin(async (tx) => tx`insert into ledger (note) values ('late')`)
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/p' })
    expect(res.statusCode).toBeGreaterThanOrEqual(500)
    expect(await waitFor(() => app?.pgPool.stats().leased === 0, 2_000)).toBe(true)
    await sleep(1_200)
    // onLease's block was started and rolled back; the handler's never began (it waited for the
    // hook, and the abort ended that wait): one span, ended once, while the app runs.
    const before = transactions()
    await app.close()
    app = undefined
    expect({ before, afterClose: transactions() }).toEqual({
      before: [{ kind: 'begin', outcome: 'rollback' }],
      afterClose: [{ kind: 'begin', outcome: 'rollback' }],
    })
  })

  test('control: no abort, both spans end, commit each', async () => {
    app = await build(async (_request: unknown, sql: Sql) => {
      await sql.begin(async (tx) => tx`select pg_sleep(0.1)`)
    })
    app.post('/p', async (request) => {
      await request.db.begin(async (tx) => tx`insert into ledger (note) values ('ok')`)
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/p' })
    expect(res.statusCode).toBe(200)
    await sleep(100)
    expect(transactions()).toEqual([
      { kind: 'begin', outcome: 'commit' },
      { kind: 'begin', outcome: 'commit' },
    ])
  })
})

// DEFECT (third-b, high). What the user does: serves pipelined routes (`config: { db: { pipeline:
// true } }`) on an app whose connection options carry an app `types` parser the pool accepts
// elsewhere, the MySQL-style 0/1 booleans round thirteen made the open check safe against
// (open-check-bool-parser). One request's handler sends a message of several statements that
// leaves a transaction block open (`unsafe("begin; insert ...; select 1")`), which the pool
// detects by asking the session (pipelined-transaction-block.test.ts: 500 FST_PG_POOL_PIPELINED,
// the connection closed, nothing committed). What they see with the parser: that request answers
// 200, and the next pipelined request sharing the connection answers 200 for an insert that runs
// inside the first request's open block: neither row is committed (not visible to anyone else),
// one request's uncommitted work is the other's session. What they should see: what they see
// without the parser (500 FST_PG_POOL_PIPELINED for the first, the block gone with its connection,
// the next request's write committed). Cause: packages/core/src/lease.ts:1113-1116 #probeAnswered
// reads SHARED_BLOCK_PROBE's answer through the app's parsers and takes only `=== true` for "in a
// block": the parser answers 1. (#blockChecked, lease.ts:917, `=== false`, misses a route
// transaction ended in SQL the same way.) Suggested fix: read the suite's probes raw, by position
// (`.raw()`, compare the text to 't'), or return an int4 flag read raw.
// Round thirteen, third round: failed on 381590e (both servers); passes after its fix.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
const apps: FastifyInstance[] = []

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table probe_rows (id serial primary key, note text not null)`
})
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close()
})
afterAll(() => db?.drop())

const zeroOne = {
  bool: {
    to: 16,
    from: [16],
    serialize: (x: unknown) => (x ? 't' : 'f'),
    parse: (x: string) => (x === 't' ? 1 : 0),
  },
}

function options(extra: Record<string, unknown>): Record<string, unknown> {
  const parsed = new URL(db.directUrl)
  return {
    host: parsed.hostname,
    port: Number(parsed.port),
    database: parsed.pathname.slice(1),
    username: decodeURIComponent(parsed.username),
    ...(parsed.password === '' ? {} : { password: decodeURIComponent(parsed.password) }),
    ...extra,
  }
}

const pipelined = { config: { db: { pipeline: true } } }

async function outcome(extra: Record<string, unknown>, tag: string) {
  const app = Fastify()
  apps.push(app)
  await app.register(pgPoolCore, { connection: options(extra) as never, pool: { max: 1, idleTimeout: 0 } })
  app.post('/opens', pipelined, async (request) => {
    await request.db.unsafe(`begin; insert into probe_rows (note) values ('${tag}-opener'); select 1 as one`)
    return { ok: true }
  })
  app.post('/note', pipelined, async (request) => {
    const [row] = await request.db`insert into probe_rows (note) values (${`${tag}-neighbour`}) returning id`
    return row
  })
  await app.ready()
  const opens = await app.inject({ method: 'POST', url: '/opens' })
  const note = await app.inject({ method: 'POST', url: '/note' })
  const count = async (note: string) =>
    (await db.sql<{ n: number }[]>`select count(*)::int as n from probe_rows where note = ${note}`)[0]?.n
  return {
    // A 2xx only for committed work.
    opener: opens.statusCode === 200 ? (await count(`${tag}-opener`)) === 1 : 'refused',
    neighbour: note.statusCode === 200 ? (await count(`${tag}-neighbour`)) === 1 : 'refused',
  }
}

describe('a block left open by one pipelined request, with an app bool parser', () => {
  test('held: without the parser, the opener is refused and the neighbour committed', async () => {
    expect(await outcome({}, 'plain')).toEqual({ opener: 'refused', neighbour: true })
  })

  test('with a 0/1 bool parser: the same, never a 200 for work left uncommitted', async () => {
    expect(await outcome({ types: zeroOne }, 'zero-one')).toEqual({ opener: 'refused', neighbour: true })
  })
})

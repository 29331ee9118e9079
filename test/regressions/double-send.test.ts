import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// Found by hostile probing (failed before the fix): a transaction route whose handler calls `reply.send(x)` and then also returns a value
// (the classic Fastify mistake that Fastify itself answers with a "Reply was already sent"
// warning) crashes the Node process, and the second payload leaves before the COMMIT answered.
//
// Expected (packages/core/README.md, "Route transactions: COMMIT before the first byte", l.217-219):
// "The COMMIT runs in onSend, before the first byte of any payload leaves ... A client never
// receives a 2xx status for work that is not committed" -- and the app keeps running, as a plain
// Fastify app (even one with an async onSend hook) does: it sends the first payload and warns.
//
// What happened before the fix: the first send enters the core's onSend and starts the COMMIT. Because
// the reply is not `sent` yet, Fastify lets the second send through; the core's onSend sees
// `lease.finished` (true as soon as finish() was called, long before the COMMIT answered) and
// passes the second payload at once (request-lease.ts:304): the client gets 200 with the second
// body while the COMMIT still runs. When the COMMIT does answer, the first onSend calls
// `done(null, payload)` from inside a `.then` (request-lease.ts:352-356), Fastify throws
// ERR_HTTP_HEADERS_SENT there, and that rejection is unhandled: the process dies (exit 1).
// With a COMMIT that fails (a deferred constraint), the client has already been told 200.

const child = fileURLToPath(new URL('./double-send-child.mjs', import.meta.url))
let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
  for (const table of ['crash', 'deferred']) {
    await db.sql.unsafe(`create table ${table}_note (body text not null)`)
    await db.sql.unsafe(`create table ${table}_parent (id int primary key)`)
    await db.sql.unsafe(`create table ${table}_child (id int primary key,
      parent_id int references ${table}_parent (id) deferrable initially deferred)`)
  }
})
afterAll(() => db.drop())

const run = (mode: string) =>
  spawnSync(process.execPath, [child, db.url, mode, mode], { encoding: 'utf8', timeout: 20_000 })

describe('reply.send() then return on a transaction route', () => {
  test('the process survives it (Fastify warns "Reply was already sent")', () => {
    const result = run('crash')
    expect(result.stderr).not.toContain('ERR_HTTP_HEADERS_SENT')
    expect(result.stdout).toContain('alive')
    expect(result.status).toBe(0)
  })

  test('a COMMIT that fails is never answered with a 2xx, and no error escapes', () => {
    const result = run('deferred')
    const line = result.stdout.trim().split('\n').pop() ?? '{}'
    const outcome = JSON.parse(line) as { status: number; body: string; rows: number; uncaught: string[] }
    expect(outcome.rows).toBe(0) // nothing committed (the deferred foreign key failed)
    expect(outcome.status).toBe(500)
    expect(outcome.uncaught).toEqual([])
  })
})

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { uniqueName, waitFor } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'

// DEFECT (probe-third, high: silent wrong results for other requests). What the user does: a
// pipelined route (`config.db: { pipeline: true }`) reads with `.cursor(n, fn)`, and the app's
// `connection.transform` (or a `connection.types` parser) throws on one of its rows; other
// pipelined requests joined the shared connection while the cursor ran (max: 1 here; in
// production whenever the pipelined connections are busy). What they see: the cursor's request
// fails as documented, but the first neighbour's `select 42 as n` resolves with NO rows: a 200
// with an empty body (a handler reading `rows[0]` gets undefined; an insert ... returning would
// look like it returned nothing). What they should see (README: "In a cursor such a throw fails
// the cursor at once and the connection is retired (postgres.js can no longer match its answers
// to its statements)"): the neighbours' statements never go onto that connection; they are
// served on another one (or fail with a connection error), never answered with another
// statement's answer.
//
// Cause: packages/core/src/postgres-adapter.ts `rejectTracked` (around line 333) ends the cursor
// at once (`endRejected`); its `onEnd` (set in `createServerClient` `sendNowOrRefuse`, around
// line 795) queues `unblock`, which hands every query waiting behind the cursor (`waiting`, the
// neighbours' statements, 8b) to postgres.js on the very connection the adapter has just declared
// unreadable (`unreadable.add(error)`; lease.ts `#settled` only marks the ServerConnection closed
// for later). postgres.js has written its own Sync for the cursor (data() catch) and, with the
// cursor's CommandComplete, another one: the extra ReadyForQuery is matched to the neighbour's
// statement, which resolves with an empty result.
//
// Fixed (postgres-adapter.ts createServerClient unblock): what waited behind such a cursor is
// failed as on a lost connection (503 FST_PG_POOL_CONNECTION_LOST, Retry-After: it did not run),
// never handed to postgres.js on that connection. Not rerouted to another connection: the pool's
// sharing bookkeeping moves sharers only after a failed session reset.
//
// Suggested fix: when a cursor is ended as unreadable, make its client `stuck` and fail what waits
// (`waiting`, with `destroyed()`, as `end()` does) instead of unblocking, so that the neighbours
// are redirected or fail as on a lost connection; more simply, never call `unblock` after an end
// whose error is `answerUnreadable`.

const fx = noteTable()
failOnProcessErrors()
const pipelined = { config: { db: { pipeline: true } } } as const

async function appWith(applicationName: string): Promise<FastifyInstance> {
  const parsed = new URL(fx.db.url)
  const app = Fastify()
  fx.closers.push(() => app.close())
  await app.register(pgPoolCore, {
    connection: {
      host: parsed.hostname,
      port: Number(parsed.port),
      database: parsed.pathname.slice(1),
      user: decodeURIComponent(parsed.username),
      password: decodeURIComponent(parsed.password),
      transform: {
        value: {
          from: (value: unknown) => {
            if (value === 3) throw new Error('value 3 is invalid')
            return value
          },
        },
      },
    } as never,
    pool: { max: 1, applicationName, statementTimeout: 5000 },
  })
  app.get('/cursor', pipelined, async (request) => {
    const seen: unknown[] = []
    try {
      await request.db
        .unsafe('select i, case when i = 1 then pg_sleep(1.5) end as pause from generate_series(1, 50) i')
        .cursor(10, (rows) => {
          seen.push(rows.length)
        })
      return { failed: undefined, seen }
    } catch (error) {
      return { failed: (error as Error).message, seen }
    }
  })
  app.get('/next', pipelined, async (request) => (await request.db`select 42 as n`)[0])
  await app.ready()
  return app
}

test('a pipelined cursor retired by a throwing transform: the neighbours queued behind it are served, the pool stays whole', async () => {
  const applicationName = uniqueName()
  const app = await appWith(applicationName)
  const cursor = app.inject('/cursor')
  expect(await waitFor(async () => (await fx.db.running(applicationName, '%pg_sleep(1.5)%')) === 1, 10_000)).toBe(true)
  const neighbours = [app.inject('/next'), app.inject('/next'), app.inject('/next')]
  expect((await cursor).json().failed).toBe('value 3 is invalid')
  const answers = await Promise.all(neighbours)
  // Never another statement's answer: each neighbour is served, or (its statement held behind
  // the cursor, never sent) answered as a lost connection, retryable.
  for (const res of answers) {
    if (res.statusCode === 200) expect(res.json()).toEqual({ n: 42 })
    else {
      expect({ status: res.statusCode, code: res.json().code, retryAfter: res.headers['retry-after'] }).toEqual({
        status: 503,
        code: 'FST_PG_POOL_CONNECTION_LOST',
        retryAfter: expect.any(String),
      })
    }
  }
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 10_000)).toBe(true)
  expect((await app.inject('/next')).json()).toEqual({ n: 42 })
  // One connection at most: the retired one is gone from the server.
  expect(await waitFor(async () => (await fx.db.countConnections(applicationName)) <= 1, 10_000)).toBe(true)
}, 40_000)

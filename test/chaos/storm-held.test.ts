import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, onTestFailed, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'
import {
  appBackends,
  type ChaosApp,
  chaosApp,
  checkDatabase,
  checkIdle,
  checkJobs,
  checkLogs,
  checkOutcomes,
  checkServer,
  finalProbes,
  handles,
  handlesAbove,
  type Shared,
  storm,
  stormConfig,
  summary,
  type Violation,
} from './chaos-kit.js'
import { traceWrites } from './trace-writes.js'

if (process.env.CHAOS_TRACE_WRITES === '1') traceWrites()

// Hostile probing (held): a seeded chaos storm (see chaos-kit.ts). Every route kind at once
// (plain, route transaction, begin(), pipelined, cursor and COPY TO streamed, handlerTimeout
// routes, GET and POST), handlers that change their session (SET ROLE, SET SESSION AUTHORIZATION,
// set_config, search_path, statement_timeout, temp tables, advisory locks, LISTEN, PREPARE,
// DECLARE ... WITH HOLD, session characteristics, a DO block, a BEGIN left open, a statement left
// running) then return, throw or fail; app.db.lease() and app.db.transaction() jobs beside them;
// real HTTP clients (some on keep-alive sockets) hanging up at random moments, some after pausing
// a streamed reply; backends terminated from outside; a pool of 2-4, with or without onConnect
// and leaseApplicationName. Probes read their own session's fingerprint and must find it as a
// fresh connection has it. Then: every request answered (or hung up by its client); no request
// sees another's state or answer; transactions commit exactly when answered 2xx (app.db work
// exactly when it resolved); gauges and /metrics back to idle; a probe on every connection clean;
// after close nothing of the app on the server and no handle left in the process; nothing
// unexplained logged at error; no uncaught exception or unhandled rejection.
//
// Seeds: CHAOS_SEED=<n> runs that one seed; CHAOS_SEEDS=a,b,c several; CHAOS_REQUESTS the
// requests per seed (300). A failure prints its seed: rerun with CHAOS_SEED to replay its schedule
// (the plans and the kill schedule are the seed's; the timing is the machine's, so a seed that
// failed once may need a few runs). Defects this storm found have failing tests of their own
// (uncommitted-2xx, handler-timeout-error-body, lease-hold-leak, reset-reroute-acquires): their
// signatures are counted and printed as "known", not failed on, unless CHAOS_STRICT=1.
// CHAOS_RESET=rollback runs the pool with sessionReset 'rollback': the storm must then fail (a
// check that the probes see dirt).
//
// Not reduced yet (about one run in ten of this file and storm-close-held.test.ts, embedded and
// PG15): an uncaught `TypeError: Cannot read properties of null (reading 'write')` from postgres.js
// (connection.js nextWrite), which failOnProcessErrors reports and which would end a production
// process. CHAOS_TRACE_WRITES=1 prints where the failing write was scheduled (trace-writes.ts):
// so far always lease.ts #blockChecked dispatching held statements from inside postgres.js's
// socket-close handler (see the report).

const seeds = process.env.CHAOS_SEED
  ? [Number(process.env.CHAOS_SEED)]
  : (process.env.CHAOS_SEEDS ?? '1,2,3,4').split(',').map(Number)
const requests = Number(process.env.CHAOS_REQUESTS ?? 300)
/** CHAOS_STRICT=1: the defects reported with failing tests of their own fail the storm too. */
const strict = process.env.CHAOS_STRICT === '1'

let db: TestDatabase
const shared: Shared = { role: `chaos_role_${randomBytes(4).toString('hex')}`, schema: 'chaos_s' }
failOnProcessErrors()

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create role ${shared.role} nologin`)
  await db.sql.unsafe(`create schema ${shared.schema}`)
  await db.sql`create table chaos_rows (tag text primary key)`
  await db.sql`create table chaos_marks (tag text primary key)`
  await db.sql.unsafe(`grant select, insert on chaos_rows, chaos_marks to ${shared.role}`)
  // Open the helper clients' connections now, so that the handle count after close compares.
  await Promise.all([db.admin`select 1`, db.admin`select pg_sleep(0.05)`])
  await Promise.all([db.sql`select pg_sleep(0.05)`, db.sql`select pg_sleep(0.05)`, db.sql`select pg_sleep(0.05)`])
})
afterAll(() => db.drop([shared.role]))

describe.each(seeds)('chaos storm, seed %i', (seed) => {
  test(`storm: every invariant holds (CHAOS_SEED=${seed})`, { timeout: 55_000 }, async () => {
    onTestFailed(() => {
      console.error(`[chaos] failed with CHAOS_SEED=${seed} (rerun: CHAOS_SEED=${seed} npm run test:chaos)`)
    })
    await db.sql`truncate chaos_rows, chaos_marks`
    const config = stormConfig(seed, requests)
    const before = handles()
    let c: ChaosApp | undefined
    const violations: Violation[] = []
    try {
      c = await chaosApp(db, shared, config)
      const result = await storm(db, c, config)
      violations.push(...checkOutcomes(result, c, config.labelLeases))
      const idle = await checkIdle(c)
      violations.push(...idle)
      // A pool that did not settle was reported: probing it would only wait acquireTimeout per probe.
      if (idle.every((x) => x.known !== undefined)) violations.push(...(await finalProbes(c, result)))
      else console.error('[chaos violation]', JSON.stringify({ seed, idle }, null, 1))
      violations.push(...(await checkServer(db, c)))
      violations.push(...(await checkDatabase(db, result)))
      violations.push(...(await checkJobs(db, result)))
      violations.push(...(await checkIdle(c)))
      violations.push(...checkLogs(c, result))
      const name = c.applicationName
      await c.app.close()
      const gone = await waitFor(async () => (await appBackends(db, name)).length === 0, 5_000)
      if (!gone) violations.push({ what: 'backends left after close', detail: await appBackends(db, name) })
      const clean = await waitFor(() => Object.keys(handlesAbove(before, handles())).length === 0, 5_000)
      if (!clean) violations.push({ what: 'handles left after close', detail: handlesAbove(before, handles()) })
      const known = violations.filter((x) => x.known !== undefined).map((x) => `${x.what} (known: ${x.known})`)
      console.log(
        '[chaos]',
        JSON.stringify({
          ...summary(result),
          config: { ...config, weights: undefined, keepAlive: undefined },
          events: c.events,
          known,
        }),
      )
      if (violations.some((x) => x.known === undefined || strict)) {
        for (const violation of violations.slice(0, 15)) {
          const handler = violation.id ? c.trace.handlers.get(violation.id) : undefined
          console.error('[chaos violation]', JSON.stringify({ seed, ...violation, handler }, null, 1))
        }
        const pids = new Set(violations.map((x) => (x.detail as { pid?: number } | undefined)?.pid).filter(Boolean))
        for (const pid of pids) {
          const history = [...c.trace.handlers.entries()].filter(([, h]) => h.pids.includes(pid as number))
          const byId = new Map(result.outcomes.map((o) => [o.id, o]))
          console.error(
            `[chaos] requests that ran on pid ${pid}:`,
            JSON.stringify(
              history.map(([id, h]) => ({
                id,
                outcome: h.outcome,
                steps: byId.get(id)?.plan.steps.join(','),
                route: byId.get(id)?.plan.route,
                status: byId.get(id)?.status,
                hungUp: byId.get(id)?.hungUp,
                at: [byId.get(id)?.startedAt, byId.get(id)?.endedAt],
              })),
            ),
          )
        }
        console.error('[chaos] kills', JSON.stringify(result.kills))
      }
    } finally {
      await c?.app.close()
    }
    const failing = violations.filter((x) => x.known === undefined || strict)
    expect({ seed, violations: failing.map((x) => `${x.what}${x.id ? ` (${x.id})` : ''}`) }).toEqual({
      seed,
      violations: [],
    })
  })
})

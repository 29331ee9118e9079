import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, onTestFailed, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, type TestDatabase, waitFor } from '../support/database.js'
import {
  appBackends,
  type ChaosApp,
  chaosApp,
  checkDatabase,
  checkJobs,
  checkLogs,
  checkOutcomes,
  handles,
  handlesAbove,
  rand,
  type Shared,
  storm,
  stormConfig,
  summary,
  type Violation,
} from './chaos-kit.js'
import { traceWrites } from './trace-writes.js'

if (process.env.CHAOS_TRACE_WRITES === '1') traceWrites()

// Hostile probing (held): the chaos storm of storm-held.test.ts, with app.close() called in the
// middle of it (at a seeded moment, with a seeded closeTimeout of 100 ms to 2 s, so that some
// statements are cut past it) while requests, app.db jobs and the backend killer are under way.
// Every request settles (answered, refused by a closed server, or hung up by its client);
// transactions commit exactly when answered 2xx; app.db work commits exactly when it resolved;
// nothing unexplained is logged; once close() resolves no backend of the app is left on the
// server (pool, ping, listen) and no handle is left in the process; no uncaught error.
// CHAOS_SEED / CHAOS_SEEDS / CHAOS_REQUESTS / CHAOS_STRICT as in storm-held.test.ts.

const seeds = process.env.CHAOS_SEED
  ? [Number(process.env.CHAOS_SEED)]
  : (process.env.CHAOS_SEEDS ?? '101,102,103,104,105').split(',').map(Number)
const requests = Number(process.env.CHAOS_REQUESTS ?? 220)
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
  await Promise.all([db.admin`select 1`, db.admin`select pg_sleep(0.05)`])
  await Promise.all([db.sql`select pg_sleep(0.05)`, db.sql`select pg_sleep(0.05)`, db.sql`select pg_sleep(0.05)`])
})
afterAll(() => db.drop([shared.role]))

describe.each(seeds)('chaos storm closed mid-way, seed %i', (seed) => {
  test(`close under the storm: every invariant holds (CHAOS_SEED=${seed})`, { timeout: 55_000 }, async () => {
    onTestFailed(() => {
      console.error(
        `[chaos] failed with CHAOS_SEED=${seed} (rerun: CHAOS_SEED=${seed} npm run test:chaos/storm-close-held.test.ts)`,
      )
    })
    await db.sql`truncate chaos_rows, chaos_marks`
    const r = rand(seed ^ 0xc105e)
    const config = { ...stormConfig(seed, requests), closeAtMs: r.int(300, 1_500), closeTimeout: r.int(100, 2_000) }
    const before = handles()
    let c: ChaosApp | undefined
    const violations: Violation[] = []
    try {
      c = await chaosApp(db, shared, config)
      // The health route's ping and a LISTEN connection are on the server too: both must go.
      await c.app.db.listen('chaos_close', () => {})
      const result = await storm(db, c, config)
      const name = c.applicationName
      violations.push(...checkOutcomes(result, c, config.labelLeases))
      violations.push(...(await checkDatabase(db, result)))
      violations.push(...(await checkJobs(db, result)))
      violations.push(...checkLogs(c, result))
      const left = await appBackends(db, name)
      if (left.length) violations.push({ what: 'backends left once close() resolved', detail: left })
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
      for (const violation of violations.filter((x) => x.known === undefined || strict).slice(0, 15)) {
        const handler = violation.id ? c.trace.handlers.get(violation.id) : undefined
        console.error('[chaos violation]', JSON.stringify({ seed, ...violation, handler }, null, 1))
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

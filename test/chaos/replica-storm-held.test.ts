// HELD (probe-storm): a seeded storm (see replica-storm-kit.ts) over read replicas with
// read-your-writes on two instances (default `a` and named `b`, each a database of one primary with
// its streaming standby, each with its own token header) and a named instance `c` on the run's server
// (embedded 18 or DATABASE_URL); every route kind (plain, route transaction, handlerTimeout
// transaction, begin(), pipelined, a write on two instances, a write then request.db.replica in one
// request, readOnly / readOnly pipelined / readOnly transaction / request.db.replica / cursor /
// handlerTimeout reads); real HTTP clients (fetch) that hang up (AbortController); at seeded moments
// replay paused and resumed, the standby restarted or down for up to 2 s, the app's backends
// terminated on either primary, the standby or the `c` server. Checked after each storm: every 2xx
// write is on its primary, no transaction that said it rolled back committed, no throwing handler
// answered 2xx, every 5xx is coded, a 2xx read that sent back the token of its write saw it, a 2xx
// read never saw an uncommitted row, no request saw another's session marker (set_config per
// request, read first by the next holder: primary, replica and `c` sessions), every 2xx write on a
// replicated instance carried its token, /metrics counted every request sent (by route) and each
// read fallback, readiness stayed 200 (polled during the storm), no reply names a password or a
// server's address and no log line a password, pools idle after, nothing of the app on any server
// after close, no uncaught error. STORM_SEED=<n> replays a seed's plans and fault schedule (timing
// is the machine's); the schedule is printed on failure. (Seed 6 found that close() hung on a
// server socket that never carried a request: fixed in round thirteen, close-requestless-socket.)
import { afterAll, beforeAll, describe, expect, onTestFailed, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { createTestDatabase, sleep, waitFor, waitUntil } from '../support/database.js'
import { startReplication } from '../support/replication.js'
import {
  backendsLeft,
  checkFlows,
  errorLines,
  expectedCounts,
  fallbackCounts,
  httpCounts,
  leaks,
  pending,
  pollHealth,
  presentTags,
  runFaults,
  runFlow,
  type StormApp,
  type StormEnv,
  schedule,
  stormApp,
  type Violation,
} from './replica-storm-kit.js'

const seeds = process.env.STORM_SEED ? [Number(process.env.STORM_SEED)] : [1]
const FLOWS = Number(process.env.STORM_FLOWS ?? 110)
const SPAN_MS = Number(process.env.STORM_SPAN_MS ?? 9_000)

let env: StormEnv
failOnProcessErrors()

beforeAll(async () => {
  const cluster = await startReplication()
  try {
    const a = await cluster.createDatabase('storm_a')
    const b = await cluster.createDatabase('storm_b')
    const c = await createTestDatabase()
    env = { cluster, a, b, c }
    const { default: postgres } = await import('postgres')
    for (const url of [a.primaryUrl, b.primaryUrl]) {
      const sql = postgres(url, { max: 1, onnotice: () => {} })
      await sql`create table w (tag text primary key)`
      await sql.end({ timeout: 1 })
    }
    await c.sql`create table w (tag text primary key)`
    await cluster.waitForReplay(cluster.standby)
  } catch (error) {
    await cluster.destroy()
    throw error
  }
}, 120_000)

afterAll(async () => {
  await env?.c.drop()
  await env?.cluster.destroy()
})

describe.each(seeds)('replica storm, seed %i', (seed) => {
  test(`every invariant holds (STORM_SEED=${seed})`, { timeout: 50_000 }, async () => {
    const plan = schedule(seed, FLOWS, SPAN_MS)
    onTestFailed(() => {
      console.error(`[storm] failed with STORM_SEED=${seed}; faults: ${JSON.stringify(plan.faults)}`)
    })
    const { cluster } = env
    if (!cluster.standby.running) await cluster.standby.start()
    await cluster.resumeReplay(cluster.standby).catch(() => {})
    let s: StormApp | undefined
    const violations: Violation[] = []
    try {
      s = await stormApp(env, { max: 3 })
      const app = s.app
      await waitUntil(
        () => app.pgPools.all().every((view) => view.role === 'primary' || view.replica()?.usable === true),
        'the replicas to be usable',
        20_000,
      )
      const started = Date.now()
      let over = false
      const base = s.base
      const flows = Promise.all(plan.flows.map((flow) => runFlow(base, flow, started)))
      const faults = runFaults(env, s, plan.faults, started, () => over)
      const health = pollHealth(base, () => over)
      // A watchdog: flows still unanswered 30 s in are a hang; report them (and what the pools hold).
      let watchdog: NodeJS.Timeout | undefined
      const hung = new Promise<'hung'>((resolve) => {
        watchdog = setTimeout(() => resolve('hung'), 30_000)
      })
      const first = await Promise.race([flows, hung])
      clearTimeout(watchdog)
      if (first === 'hung') {
        over = true
        const detail = {
          pending: [...pending.entries()].slice(0, 10),
          pools: app.pgPools.all().map((v) => ({ name: v.name, stats: v.stats(), replica: v.replica() })),
          standbyRunning: cluster.standby.running,
        }
        console.error('[storm hang]', JSON.stringify({ seed, ...detail }, null, 1))
        throw new Error(`seed ${seed}: ${pending.size} flows unanswered 30 s into the storm: ${JSON.stringify(detail)}`)
      }
      const results = first
      over = true
      const faultLog = await faults
      const healthSeen = await health
      // The default primary never stopped: readiness stays 200 (a replica or `b` only warn).
      if (healthSeen.bad.length > 0)
        violations.push({ what: 'readiness not 200 while the primary served', detail: healthSeen.bad.slice(0, 3) })
      const u = new URL(env.a.primaryUrl)
      const secrets = [
        decodeURIComponent(u.password),
        `127.0.0.1:${u.port}`,
        `127.0.0.1:${cluster.standby.port}`,
        env.c.password,
      ].filter((x) => x.length > 0)
      violations.push(
        ...leaks(
          results,
          s,
          secrets,
          [decodeURIComponent(u.password), env.c.password].filter((x) => x.length > 0),
        ),
      )
      for (const text of healthSeen.texts)
        for (const secret of secrets)
          if (text.includes(secret)) violations.push({ what: `readiness body holds ${secret}` })
      if (!cluster.standby.running) await cluster.standby.start()
      await cluster.resumeReplay(cluster.standby).catch(() => {})

      // Settled: nothing leased, nothing waiting.
      const idle = await waitFor(
        () => app.pgPools.all().every((view) => view.stats().leased === 0 && view.stats().waiting === 0),
        8_000,
      )
      if (!idle)
        violations.push({
          what: 'pools not idle after the storm',
          detail: app.pgPools.all().map((v) => ({ name: v.name, stats: v.stats() })),
        })
      const present = await presentTags(env)
      violations.push(...checkFlows(results, present))
      for (const [id, seen] of s.markers) violations.push({ what: 'saw another request’s marker', id, detail: seen })
      // Metrics: every request sent is counted (hung-up ones as `aborted`).
      const expected = expectedCounts(results)
      const countsMatch = await waitFor(async () => {
        const got = await httpCounts(base)
        return Object.entries(expected).every(([route, n]) => got[route] === n)
      }, 5_000)
      if (!countsMatch) {
        const got = await httpCounts(base)
        const diff = Object.entries(expected)
          .filter(([route, n]) => got[route] !== n)
          .map(([route, n]) => `${route}: sent ${n}, counted ${got[route]}`)
        violations.push({ what: 'http metrics differ from requests sent', detail: diff })
      }
      const fb = await fallbackCounts(base)
      const fbTotal = Object.values(fb).reduce((x, y) => x + y, 0)
      if (fb.primary !== s.fallbacks.length)
        violations.push({
          what: 'read fallback metric differs from the events',
          detail: { fb, events: s.fallbacks.length, fbTotal },
        })
      const statuses: Record<string, number> = {}
      for (const r of results) {
        const key = `${r.flow.write} ${r.write.status} ${(r.write.body as { code?: string })?.code ?? ''}`
        statuses[key] = (statuses[key] ?? 0) + 1
        for (const read of r.reads) {
          const k2 = `${read.route} ${read.status} ${(read.body as { code?: string })?.code ?? ''}`
          statuses[k2] = (statuses[k2] ?? 0) + 1
        }
      }
      // What the storm exercised: token reads a standby served, token reads the primary served.
      let onStandby = 0
      let onPrimary = 0
      for (const r of results)
        for (const read of r.reads)
          if (read.status === 200 && (read.sentA || read.sentB)) {
            if ((read.body as { standby?: boolean }).standby) onStandby++
            else onPrimary++
          }
      console.log(
        '[storm]',
        JSON.stringify({
          seed,
          tokenReads: { onStandby, onPrimary },
          faults: faultLog,
          fallbacks: s.fallbacks.length,
          errors: errorLines(s),
          statuses: process.env.STORM_VERBOSE ? statuses : undefined,
        }),
      )
      // close() must end (closeTimeout is 2 s): a huge bound, then what is still held.
      let closeWatch: NodeJS.Timeout | undefined
      const closing = app.close().then(() => 'closed' as const)
      const closeOutcome = await Promise.race([
        closing,
        new Promise<'hung'>((resolve) => {
          closeWatch = setTimeout(() => resolve('hung'), 15_000)
        }),
      ])
      clearTimeout(closeWatch)
      if (closeOutcome === 'hung') {
        const detail = {
          pools: app.pgPools.all().map((v) => ({ name: v.name, stats: v.stats() })),
          backends: await backendsLeft(env, s),
          pendingFlows: pending.size,
          sockets: [...s.sockets.entries()].map(([socket, reqs]) => ({
            destroyed: socket.destroyed,
            reqs: reqs.slice(-3),
            plan: reqs
              .slice(-3)
              .map((r) => plan.flows.find((f) => r.id.startsWith(`${f.id}-`)))
              .filter(Boolean),
          })),
          listening: app.server.listening,
          connections: await new Promise((resolve) => app.server.getConnections((_e, n) => resolve(n))),
          resources: process.getActiveResourcesInfo().reduce<Record<string, number>>((acc, t) => {
            acc[t] = (acc[t] ?? 0) + 1
            return acc
          }, {}),
        }
        console.error('[storm close hang]', JSON.stringify({ seed, ...detail }, null, 1))
        throw new Error(
          `seed ${seed}: app.close() not done 15 s after it was called (closeTimeout 2 s): ${JSON.stringify(detail)}`,
        )
      }
      const gone = await waitFor(async () => {
        const left = await backendsLeft(env, s as StormApp)
        return left.primary === 0 && (left.standby ?? 0) <= 0 && left.c === 0
      }, 6_000)
      if (!gone) violations.push({ what: 'backends left after close', detail: await backendsLeft(env, s) })
    } finally {
      await s?.app.close()
      await sleep(10)
    }
    for (const x of violations.slice(0, 20)) console.error('[storm violation]', JSON.stringify({ seed, ...x }))
    expect({ seed, violations: violations.map((x) => `${x.what}${x.id ? ` (${x.id})` : ''}`) }).toEqual({
      seed,
      violations: [],
    })
  })
})

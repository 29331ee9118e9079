import { readdirSync, readFileSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { closedLoop, openLoop, sampler } from './load.js'
import { ITEMS, startDatabase } from './postgres.js'
import { writeReport } from './report.js'
import { spawnServer } from './spawn-server.js'
import { medianOf, pairedRatio, totalOver } from './stats.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const durationMs = Number(process.env.BENCH_DURATION ?? 3_000)
const rounds = Number(process.env.BENCH_ROUNDS ?? 5)
// S1 measures throughput, which drifts with the shared machine by tens of percent within a
// minute: many short rounds, medians of per-round ratios (BENCH_S1_ROUNDS, BENCH_S1_DURATION).
const S1_ROUNDS = Number(process.env.BENCH_S1_ROUNDS ?? 9)
const S1_DURATION_MS = Number(process.env.BENCH_S1_DURATION ?? 1_500)
const only = new Set((process.env.BENCH_ONLY ?? 'S0,S1,S2o,S2').split(','))
const POOL_MAX = 10
// BENCH_LOADS narrows the S2o offered loads (multiples of capacity) while tuning.
const loads = (process.env.BENCH_LOADS ?? '0.5,1,2,4').split(',').map(Number)
const HOLD_MS = 20
const CAPACITY = POOL_MAX * (1000 / HOLD_MS)
const MAX_WAITING = POOL_MAX * 10
// Uncounted 1 s overloads each server goes through before S2o's and S2's first round. V8 was
// still optimising ~40 functions a second 3 s into an overload of a fresh suite server and
// settled after ~6 s (--trace-opt); its compiler thread shares the machine's two cores.
const WARM_OVERLOADS = Number(process.env.BENCH_WARM_OVERLOADS ?? 5)

const allVariants = {
  suite: 'fastify-pg-pool (all features on; a connection per request, session reset)',
  'suite-pipelined': 'fastify-pg-pool (all features on; routes pipelined)',
  'suite-off': 'fastify-pg-pool, backpressure: false (a connection per request)',
  raw: 'postgres.js in a route',
  'fastify-postgres': '@fastify/postgres (pg)',
}
// S1 only (not in the overload scenarios): what the session reset costs, against the cheaper
// opt-in mode and, with BENCH_BASELINE=<a checkout of an earlier commit, installed and built>,
// against that commit's default lease.
const s1Variants = {
  'suite-rollback': "fastify-pg-pool, sessionReset: 'rollback' (a connection per request)",
  ...(process.env.BENCH_BASELINE
    ? { baseline: `the default lease at ${process.env.BENCH_BASELINE_LABEL ?? 'BENCH_BASELINE'}` }
    : {}),
}
// BENCH_VARIANTS narrows the run while tuning; the targets need all of them.
const chosen = process.env.BENCH_VARIANTS?.split(',')
export const variants = Object.fromEntries(
  Object.entries(allVariants).filter(([key]) => !chosen || chosen.includes(key)),
)
const s1Only = Object.fromEntries(Object.entries(s1Variants).filter(([key]) => !chosen || chosen.includes(key)))

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const lines = []
const log = (line = '') => {
  console.log(line)
  lines.push(...String(line).split('\n'))
}

function startServer(variant, url) {
  // The baseline runs the earlier checkout's own server with its default lease.
  const baseline = variant === 'baseline'
  return spawnServer({
    cwd: baseline ? process.env.BENCH_BASELINE : root,
    // BENCH_NODE_ARGS: extra node flags for the servers, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`.
    nodeArgs: process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [],
    env: {
      // BENCH_BASELINE_VARIANT: which of the earlier server's variants (its pipelined `suite`, say).
      VARIANT: baseline ? (process.env.BENCH_BASELINE_VARIANT ?? 'suite-exclusive') : variant,
      DATABASE_URL: url,
      POOL_MAX: String(POOL_MAX),
      APP_NAME: `bench-${variant}`,
    },
    label: variant,
  })
}

async function withServer(variant, url, work) {
  const server = await startServer(variant, url)
  try {
    return await work(server.base)
  } finally {
    await server.stop()
  }
}

/**
 * Starts every variant's server, warms each up with `warm(base)`, and keeps them all running
 * for `work(servers)`: long-running processes, as services are, and the variants of a round
 * can run seconds apart.
 */
async function withServers(url, warm, work, which = variants) {
  const servers = {}
  try {
    for (const variant of Object.keys(which)) {
      servers[variant] = await startServer(variant, url)
      await warm(servers[variant].base)
    }
    return await work(Object.fromEntries(Object.entries(servers).map(([variant, server]) => [variant, server.base])))
  } finally {
    await Promise.all(Object.values(servers).map((server) => server.stop()))
  }
}

/** Waits until the server has no request waiting for the database (a backlog left by an overload). */
async function drain(base) {
  const until = performance.now() + 30_000
  while (performance.now() < until && (await getJson(`${base}/stats`)).body?.waiting !== 0) await sleep(100)
  await sleep(300)
}

function getJson(url) {
  return new Promise((resolve) => {
    http
      .get(url, { agent: false }, (res) => {
        let body = ''
        res.on('data', (chunk) => {
          body += chunk
        })
        res.on('end', () => resolve({ status: res.statusCode, body: body ? JSON.parse(body) : null }))
      })
      .on('error', () => resolve({ status: 0, body: null }))
  })
}

const randomItem = () => `/items/${1 + Math.floor(Math.random() * ITEMS)}`

/** /slow at half its capacity for 0.5 s: the state a service is in before an overload. */
async function warmUp(base) {
  await openLoop({ url: `${base}/slow`, rate: CAPACITY / 2, durationMs: 500, graceMs: 200 })
}

/** S0: 20 clients hang up mid-query; the app must keep serving and get every connection back. */
async function abortSafety(db, variant) {
  return withServer(variant, db.url, async (base) => {
    const requests = Array.from({ length: 20 }, () => {
      const req = http.get(`${base}/hold`, { agent: false })
      req.on('error', () => {})
      return req
    })
    await sleep(150)
    for (const req of requests) req.destroy()
    await sleep(200)
    const [{ n: stillRunning }] = await db.admin`
      select count(*)::int as n from pg_stat_activity
      where application_name = ${`bench-${variant}`} and state = 'active' and query like '%pg_sleep(0.5)%'`
    // Every aborted query has ended by now whether cancelled or not (500 ms).
    await sleep(600)
    let served = 0
    const started = performance.now()
    for (let i = 0; i < 20; i++) if ((await getJson(`${base}${randomItem()}`)).status === 200) served++
    const serveMs = performance.now() - started
    const stats = (await getJson(`${base}/stats`)).body
    const leaked = variant.startsWith('suite') ? stats.leased : undefined
    const pass = served === 20 && (leaked === undefined || leaked === 0)
    return { variant, stillRunning, served, serveMs, leaked, pass }
  })
}

const randomTx = () => `/tx/${1 + Math.floor(Math.random() * ITEMS)}`

/**
 * CPU time (ms) the whole PostgreSQL server has used: its postmaster's exited children (cutime +
 * cstime) plus every live child, from /proc. Only when the server runs on this machine (the
 * embedded one does), else NaN. S1 measures one variant at a time, so the difference across a
 * measurement is that variant's statements (plus the server's background processes, a few µs
 * per request at most), whatever backends the pool opened or retired meanwhile.
 */
async function postgresCpuMs(db) {
  const tick = 1000 / 100 // USER_HZ on Linux
  const stat = (pid) => {
    const [comm, rest] = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')
    return { comm, fields: rest.split(' ') }
  }
  try {
    const [{ pid }] = await db.admin`select pg_backend_pid() as pid`
    const backend = stat(pid)
    if (!backend.comm.includes('postgres')) return Number.NaN // a remote server's pid
    const postmaster = Number(backend.fields[1])
    const { fields } = stat(postmaster)
    let ms = (Number(fields[13]) + Number(fields[14])) * tick // cutime + cstime
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue
      try {
        const child = stat(entry)
        if (Number(child.fields[1]) === postmaster) ms += (Number(child.fields[11]) + Number(child.fields[12])) * tick
      } catch {}
    }
    return ms
  } catch {
    return Number.NaN
  }
}

/** One S1 measurement on a running server: 64 connections, closed loop, GET by id (or `paths`). */
async function throughput(db, base, paths = randomItem) {
  const before = (await getJson(`${base}/cpu`)).body
  const pgBefore = await postgresCpuMs(db)
  const clientBefore = process.cpuUsage()
  const result = await closedLoop({ url: base, connections: 64, durationMs: S1_DURATION_MS, paths })
  const client = process.cpuUsage(clientBefore)
  const pgAfter = await postgresCpuMs(db)
  const after = (await getJson(`${base}/cpu`)).body
  const requests = result.answered + 1
  return {
    ...result,
    // The server process's CPU and GC time per request, microseconds.
    cpuUs: ((after.cpuMs - before.cpuMs) * 1000) / requests,
    gcUs: ((after.gcMs - before.gcMs) * 1000) / requests,
    // PostgreSQL's (its backends for this variant) and the load generator's, per request.
    pgCpuUs: ((pgAfter - pgBefore) * 1000) / requests,
    clientCpuUs: (client.user + client.system) / requests,
    shedBy: Object.entries(after.shed)
      .map(([reason, n]) => [reason, n - (before.shed[reason] ?? 0)])
      .filter(([, n]) => n > 0),
  }
}

async function openLoopOverload(base, variant, factor) {
  await warmUp(base)
  const waiters = sampler(`${base}/stats`, 50, (body) => JSON.parse(body).waiting)
  const live = sampler(`${base}/health/live`, 100)
  const metrics = variant.startsWith('suite') ? sampler(`${base}/metrics`, 100) : undefined
  const before = (await getJson(`${base}/cpu`)).body
  const result = await openLoop({ url: `${base}/slow`, rate: CAPACITY * factor, durationMs })
  const after = (await getJson(`${base}/cpu`)).body
  const [w, l, m] = await Promise.all([waiters(), live(), metrics?.()])
  await drain(base)
  // The floor under the 503 latency: the same generator at the same rate on a route that
  // answers at once with no database, right after the overload.
  const floor =
    factor === 2
      ? await openLoop({ url: `${base}/health/live`, rate: CAPACITY * factor, durationMs: 1_000 })
      : undefined
  return {
    ...result,
    floorP99: floor?.sent99,
    // The server's garbage collection while the requests were sent and answered.
    gcPauses: after.gcCount - before.gcCount,
    gcByKind: Object.entries(after.gcByKind)
      .map(([kind, n]) => [kind, n - (before.gcByKind[kind] ?? 0)])
      .filter(([, n]) => n > 0),
    newSpaceMB: [before.newSpaceMB, after.newSpaceMB],
    gcLongestMs: after.gcLongest.ms,
    gcLongestKind: after.gcLongest.kind,
    factor,
    waitersMax: w.values.length ? Math.max(...w.values) : Number.NaN,
    liveMax: l.max,
    liveFailures: l.failures,
    metricsMax: m?.max,
    metricsFailures: m?.failures,
  }
}

async function retryStorm(base, variant) {
  // What the load generator itself adds: the same closed loop on a route with no database.
  const baseline =
    variant === 'suite'
      ? await closedLoop({ url: `${base}/health/live`, connections: 400, durationMs: 1_500 })
      : undefined
  await warmUp(base)
  const result = await closedLoop({ url: `${base}/slow`, connections: 400, durationMs })
  await drain(base)
  return { ...result, baselineP99: baseline?.ok99 }
}

const loadavg = () =>
  os
    .loadavg()
    .map((n) => n.toFixed(2))
    .join(' ')

/** The variants in the order round `round` runs them: rotated, so none always runs first or last. */
const inOrder = (round, which = variants) => {
  const keys = Object.keys(which)
  return keys.map((_, i) => keys[(i + round) % keys.length])
}

function push(runs, key, value) {
  runs[key] ??= []
  runs[key].push(value)
}

const fmt = (n, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '–')

async function main() {
  // `node bench/run.js --report FILE` rewrites the docs from the results a run saved in FILE.
  const reportFrom = process.argv.indexOf('--report')
  if (reportFrom > 0) {
    const saved = JSON.parse(await readFile(process.argv[reportFrom + 1], 'utf8'))
    saved.startedAt = new Date(saved.startedAt)
    lines.push(...saved.lines)
    // Judged again, by this version's rules.
    saved.targets = evaluate(saved, 'suite')
    const files = await writeReport(saved, { variants, s1Variants: s1Only, lines })
    console.log(`wrote ${files.join(', ')}`)
    return
  }
  const startedAt = new Date()
  const db = await startDatabase()
  log(`PostgreSQL ${db.version} (${db.kind}), node ${process.version}, ${os.cpus().length} CPUs`)
  log(`load average at start: ${loadavg()}`)
  log(
    `pool max ${POOL_MAX}; /slow holds ${HOLD_MS} ms → capacity ≈ ${CAPACITY} req/s; ${durationMs} ms per run, ${rounds} rounds\n`,
  )
  const results = {
    durationMs,
    rounds,
    s1: { rounds: S1_ROUNDS, durationMs: S1_DURATION_MS },
    capacity: CAPACITY,
    warmOverloads: WARM_OVERLOADS,
    maxWaiting: MAX_WAITING,
    startedAt,
    db: `${db.version} (${db.kind})`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    notes: process.env.BENCH_NOTES,
    baselineLabel: process.env.BENCH_BASELINE ? (process.env.BENCH_BASELINE_LABEL ?? 'BENCH_BASELINE') : undefined,
  }
  try {
    if (only.has('S0')) {
      results.S0 = []
      for (const variant of ['suite', 'raw', 'fastify-postgres'].filter((v) => v in variants)) {
        const r = await abortSafety(db, variant)
        results.S0.push(r)
        log(
          `S0 ${variant}: ${r.stillRunning} aborted queries still running 200 ms later, ${r.served}/20 served after, leased ${r.leaked ?? 'n/a'} → ${r.pass ? 'ok' : 'FAILED'}`,
        )
      }
    }
    if (only.has('S1')) {
      // Short rounds, so that the variants of one round are measured within seconds of each other.
      const warm = async (base) => {
        await closedLoop({ url: base, connections: 64, durationMs: 1_500, paths: randomItem })
        await closedLoop({ url: base, connections: 64, durationMs: 500, paths: randomTx })
      }
      const s1 = { ...variants, ...s1Only }
      // S1t: the same GET in a transaction; the suite's route transaction against postgres.js's
      // sql.begin (and @fastify/postgres's transact), in the same rounds.
      const txVariants = ['suite', 'raw', 'fastify-postgres', 'baseline'].filter((v) => v in s1)
      await withServers(
        db.url,
        warm,
        async (servers) => {
          const runs = {}
          const txRuns = {}
          for (let round = 0; round < S1_ROUNDS; round++) {
            for (const variant of inOrder(round, s1)) {
              const r = await throughput(db, servers[variant])
              push(runs, variant, r)
              log(
                `S1 round ${round + 1} ${variant}: ${fmt(r.okPerS)} req/s, p99 ${fmt(r.ok99, 1)} ms, non-2xx ${r.refused + r.other}${r.shedBy.length > 0 ? ` (refused: ${r.shedBy.map(([reason, n]) => `${n} ${reason}`).join(', ')})` : ''}, server CPU ${fmt(r.cpuUs)} µs/request (GC ${fmt(r.gcUs, 1)}), PostgreSQL ${fmt(r.pgCpuUs)} µs, load generator ${fmt(r.clientCpuUs)} µs`,
              )
            }
            for (const variant of inOrder(round, Object.fromEntries(txVariants.map((v) => [v, v])))) {
              const r = await throughput(db, servers[variant], randomTx)
              push(txRuns, variant, r)
              log(
                `S1t round ${round + 1} ${variant}: ${fmt(r.okPerS)} req/s, p99 ${fmt(r.ok99, 1)} ms, non-2xx ${r.refused + r.other}, server CPU ${fmt(r.cpuUs)} µs/request (GC ${fmt(r.gcUs, 1)}), PostgreSQL ${fmt(r.pgCpuUs)} µs`,
              )
            }
          }
          results.S1 = Object.fromEntries(Object.entries(runs).map(([v, rs]) => [v, medianOf(rs)]))
          results.S1t = Object.fromEntries(Object.entries(txRuns).map(([v, rs]) => [v, medianOf(rs)]))
        },
        s1,
      )
    }
    if (only.has('S2o')) {
      // Each server first goes through overloads that are not counted (1 s at 2×, WARM_OVERLOADS
      // times), so that what is measured is a warm process, not the compiler at work.
      const warm = async (base) => {
        await warmUp(base)
        for (let i = 0; i < WARM_OVERLOADS; i++) {
          await openLoop({ url: `${base}/slow`, rate: CAPACITY * 2, durationMs: 1_000, graceMs: 500 })
          await drain(base)
        }
      }
      await withServers(db.url, warm, async (servers) => {
        const runs = {}
        for (let round = 0; round < rounds; round++) {
          for (const factor of loads) {
            for (const variant of inOrder(round)) {
              const r = await openLoopOverload(servers[variant], variant, factor)
              runs[factor] ??= {}
              push(runs[factor], variant, r)
              log(
                `S2o round ${round + 1} ${factor}× ${variant}: goodput ${fmt(r.goodput)} req/s, 2xx p99 ${fmt(r.ok99)} ms, 503 ${r.refused} (p99 ${fmt(r.refused99, 1)} ms${r.floorP99 === undefined ? '' : `; /health/live at the same rate after: p99 ${fmt(r.floorP99, 1)} ms`}), unanswered ${r.unanswered}, waiters max ${r.waitersMax}, /health/live max ${fmt(r.liveMax, 1)} ms, /metrics max ${fmt(r.metricsMax, 1)} ms, generator lag p99 ${fmt(r.lagP99, 1)} ms, server GC ${r.gcPauses} pauses (${r.gcByKind.map(([kind, n]) => `${n} ${kind}`).join(', ')}; young generation ${r.newSpaceMB.map((mb) => fmt(mb, 1)).join(' → ')} MB), longest ${fmt(r.gcLongestMs, 1)} ms (${r.gcLongestKind})`,
              )
            }
          }
        }
        results.S2o = Object.fromEntries(
          Object.entries(runs).map(([factor, byVariant]) => [
            factor,
            Object.fromEntries(Object.entries(byVariant).map(([v, rs]) => [v, medianOf(rs)])),
          ]),
        )
      })
    }
    if (only.has('S2')) {
      // As in S2o, each server first goes through storms that are not counted (1 s each).
      const warm = async (base) => {
        await warmUp(base)
        for (let i = 0; i < WARM_OVERLOADS; i++) {
          await closedLoop({ url: `${base}/slow`, connections: 400, durationMs: 1_000 })
          await drain(base)
        }
      }
      await withServers(db.url, warm, async (servers) => {
        const runs = {}
        for (let round = 0; round < rounds; round++) {
          for (const variant of inOrder(round)) {
            const r = await retryStorm(servers[variant], variant)
            push(runs, variant, r)
            log(
              `S2 round ${round + 1} ${variant}: ${fmt(r.okPerS)} 2xx/s, 2xx p99 ${fmt(r.ok99)} ms, 503/s ${fmt(r.refused / r.windowS)}${r.baselineP99 === undefined ? '' : ` (the same 400 clients on /health/live: p99 ${fmt(r.baselineP99)} ms)`}`,
            )
          }
        }
        results.S2 = Object.fromEntries(Object.entries(runs).map(([v, rs]) => [v, medianOf(rs)]))
      })
    }
  } finally {
    await db.stop()
  }
  results.loadStart = lines.find((l) => l.startsWith('load average at start'))?.slice(23)
  results.loadEnd = loadavg()
  log(`load average at end: ${results.loadEnd}`)
  results.targets = evaluate(results, 'suite')
  log('\nTargets (the default: a connection per request, all features on, the session reset included):')
  for (const t of results.targets) log(`${t.pass ? 'PASS' : 'FAIL'}  ${t.name}: ${t.measured}`)
  if (chosen) return
  const saved = join(os.tmpdir(), `fastify-pg-pool-bench-${startedAt.getTime()}.json`)
  await writeFile(saved, JSON.stringify({ ...results, lines }))
  log(`results saved in ${saved}`)
  // A run narrowed to some scenarios or loads would leave most of the page empty or stale: it
  // leaves docs/ alone (`--report FILE` writes them from its results on purpose).
  if (process.env.BENCH_ONLY !== undefined || process.env.BENCH_LOADS !== undefined) {
    log('BENCH_ONLY or BENCH_LOADS narrowed this run: docs/ left as they were')
    return
  }
  const files = await writeReport(results, { variants, s1Variants: s1Only, lines })
  log(`\nwrote ${files.join(', ')}`)
}

function evaluate(r, key) {
  if (chosen) return []
  const targets = []
  const add = (name, pass, measured) => targets.push({ name, pass, measured })
  if (r.S0) {
    const suite = r.S0.find((x) => x.variant === key)
    if (suite) add('S0 abort safety', suite.pass, `${suite.served}/20 served after 20 aborts, leased ${suite.leaked}`)
  }
  if (r.S1) {
    const { raw } = r.S1
    const suite = r.S1[key]
    const fpg = r.S1['fastify-postgres']
    const toRaw = pairedRatio(suite, raw)
    const toPg = pairedRatio(suite, fpg)
    add('S1 ≥ 0.9× raw postgres.js', toRaw >= 0.9, `${fmt(toRaw, 2)}×`)
    add('S1 ≥ 1.4× @fastify/postgres', toPg >= 1.4, `${fmt(toPg, 2)}×`)
    // Every round counts: one round that refused would not move a median.
    const refused = totalOver(suite, 'refused')
    const failed = totalOver(suite, 'refused', 'other')
    add(
      'S1 zero refusals at default thresholds',
      failed === 0,
      `${refused} × 503${failed > refused ? `, ${failed - refused} other non-2xx` : ''} in ${suite.rounds?.length ?? 1} rounds`,
    )
    const pipelined = r.S1['suite-pipelined']
    if (pipelined) {
      const ratio = pairedRatio(pipelined, raw)
      add('S1 pipelined routes ≥ 1.1× raw postgres.js', ratio >= 1.1, `${fmt(ratio, 2)}×`)
    }
  }
  if (r.S1t?.[key] && r.S1t.raw) {
    const ratio = pairedRatio(r.S1t[key], r.S1t.raw)
    add("S1t transaction route ≥ 0.95× postgres.js's sql.begin", ratio >= 0.95, `${fmt(ratio, 2)}×`)
  }
  const s2o = r.S2o?.[2]?.[key]
  if (s2o) {
    add(
      'S2o 2× goodput ≥ 95% of capacity',
      s2o.goodput >= 0.95 * r.capacity,
      `${fmt((100 * s2o.goodput) / r.capacity)}% (${fmt(s2o.goodput)} req/s)`,
    )
    add('S2o 2× p99 of successes ≤ 100 ms', s2o.ok99 <= 100, `${fmt(s2o.ok99, 1)} ms`)
    add('S2o 2× refusals p99 ≤ 5 ms', s2o.refused99 <= 5, `${fmt(s2o.refused99, 1)} ms`)
    add(
      'S2o 2× waiters never above the cap',
      s2o.waitersMax <= r.maxWaiting,
      `max ${s2o.waitersMax} (cap ${r.maxWaiting})`,
    )
    const suites = Object.values(r.S2o).map((byVariant) => byVariant[key])
    const live = Math.max(...suites.map((x) => x.liveMax))
    const metrics = Math.max(...suites.map((x) => x.metricsMax))
    const failures = suites.reduce((n, x) => n + x.liveFailures + x.metricsFailures, 0)
    add(
      'S2o /health/live and /metrics within 50 ms throughout',
      live <= 50 && metrics <= 50 && failures === 0,
      `max ${fmt(live, 1)} ms and ${fmt(metrics, 1)} ms, ${failures} failures`,
    )
  }
  if (r.S2) {
    const { raw } = r.S2
    const suite = r.S2[key]
    const toRaw = pairedRatio(suite, raw)
    add('S2 goodput ≥ 0.8× raw postgres.js', toRaw >= 0.8, `${fmt(toRaw, 2)}×`)
    add('S2 p99 of successes ≤ 250 ms', suite.ok99 <= 250, `${fmt(suite.ok99)} ms`)
  }
  return targets
}

await main()

// Where a GET-by-id request's time goes on the wire, per variant: the database writes and reads
// per request, their bytes, the HTTP writes, the round trip from a database write to its answer as
// the event loop sees it, and the server's CPU per request. Run: `node bench/wire.js` (embedded
// PostgreSQL 18, or DATABASE_URL). BENCH_WIRE_VARIANTS (default suite,suite-rollback,raw),
// BENCH_WIRE_ROUNDS (3) and BENCH_WIRE_DURATION (ms, 3000) shape it. Counters:
// bench/wire-counter.cjs, preloaded into each server.
import { readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { closedLoop } from './load.js'
import { ITEMS, startDatabase } from './postgres.js'
import { spawnServer } from './spawn-server.js'
import { percentile } from './stats.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const variants = (process.env.BENCH_WIRE_VARIANTS ?? 'suite,suite-rollback,raw').split(',')
const rounds = Number(process.env.BENCH_WIRE_ROUNDS ?? 3)
const durationMs = Number(process.env.BENCH_WIRE_DURATION ?? 3_000)
const paths = () => `/items/${1 + Math.floor(Math.random() * ITEMS)}`
const median = (values) => percentile(values, 50)

async function measure(url, variant) {
  const out = join(tmpdir(), `fpp-wire-${process.pid}-${variant}.json`)
  const server = await spawnServer({
    cwd: root,
    nodeArgs: ['--require', join(root, 'bench/wire-counter.cjs')],
    env: { VARIANT: variant, DATABASE_URL: url, POOL_MAX: '10', APP_NAME: `bench-wire-${variant}`, WIRE_OUT: out },
    label: variant,
  })
  await closedLoop({ url: server.base, connections: 64, durationMs: 500, paths })
  process.kill(server.pid, 'SIGUSR2')
  const load = await closedLoop({ url: server.base, connections: 64, durationMs, paths })
  await server.stop()
  const counts = JSON.parse(readFileSync(out, 'utf8'))
  rmSync(out, { force: true })
  const per = (key) => counts[key] / counts.requests
  return {
    okPerS: load.okPerS,
    dbWrites: per('dbWrites'),
    dbBytes: per('dbBytes'),
    dbReads: per('dbReads'),
    httpWrites: per('httpWrites'),
    cpuUs: per('cpuUs'),
    roundTrip50: percentile(counts.roundTrips, 50),
    roundTrip90: percentile(counts.roundTrips, 90),
  }
}

const db = await startDatabase()
try {
  console.log(
    `PostgreSQL ${db.version} (${db.kind}), node ${process.version}; 64 clients, pool 10, ${durationMs} ms × ${rounds} rounds`,
  )
  const runs = Object.fromEntries(variants.map((variant) => [variant, []]))
  for (let round = 0; round < rounds; round++) {
    for (const variant of variants) runs[variant].push(await measure(db.url, variant))
  }
  const fmt = (value, digits = 0) => value.toFixed(digits)
  console.log(
    'variant          req/s  server CPU µs/req  db writes/req  db bytes/req  db reads/req  http writes/req  db round trip p50/p90 µs',
  )
  for (const variant of variants) {
    const m = (key) => median(runs[variant].map((run) => run[key]))
    console.log(
      `${variant.padEnd(16)} ${fmt(m('okPerS')).padStart(6)}  ${fmt(m('cpuUs')).padStart(17)}  ${fmt(m('dbWrites'), 2).padStart(13)}  ${fmt(m('dbBytes')).padStart(12)}  ${fmt(m('dbReads'), 2).padStart(12)}  ${fmt(m('httpWrites'), 2).padStart(15)}  ${fmt(m('roundTrip50'))}/${fmt(m('roundTrip90'))}`,
    )
  }
} finally {
  await db.stop()
}

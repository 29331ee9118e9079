// What @fastify-pg-pool/otel costs S1 (GET /items/:id, 64 clients, closed loop, pool 10): the
// suite's server three times, side by side, with the plugin off, on with no SDK (noop), and on
// with the SDK exporting spans in batches and metrics every second over OTLP/HTTP (sdk), to a
// sink this script runs. The modes run in every round, in rotated order; the ratios are medians
// of per-round ratios to `off` (bench/stats.js), throughput and the server's CPU per request.
// Knobs: BENCH_S1_ROUNDS (default 9), BENCH_S1_DURATION (ms, default 1500), BENCH_OTEL_VARIANT
// (suite, the default path: a connection per request, the session reset included; or
// suite-pipelined, the routes pipelined), BENCH_OTEL_CONTROL=1 (a fourth server, `off2`, the
// same as `off`: its ratio is the noise floor of the run, against which a 2 % difference can be
// judged). DATABASE_URL as in bench/run.js.
// Run: node bench/otel.js
import { spawn } from 'node:child_process'
import http from 'node:http'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { closedLoop } from './load.js'
import { ITEMS, startDatabase } from './postgres.js'
import { medianOf, pairedRatio } from './stats.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const ROUNDS = Number(process.env.BENCH_S1_ROUNDS ?? 9)
const DURATION_MS = Number(process.env.BENCH_S1_DURATION ?? 1_500)
const VARIANT = process.env.BENCH_OTEL_VARIANT ?? 'suite'
const POOL_MAX = 10
const MODES = ['off', 'noop', 'sdk', ...(process.env.BENCH_OTEL_CONTROL === '1' ? ['off2'] : [])]
/** BENCH_OTEL of a mode: the control is `off` again. */
const setting = (mode) => (mode === 'off2' ? 'off' : mode)

const fmt = (n, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '–')
const loadavg = () =>
  os
    .loadavg()
    .map((n) => n.toFixed(2))
    .join(' ')

/** An OTLP/HTTP receiver that answers 200 and counts what it got. */
async function startSink() {
  const got = { requests: 0, bytes: 0, byPath: {} }
  const server = http.createServer((request, response) => {
    request.on('data', (chunk) => {
      got.bytes += chunk.length
    })
    request.on('end', () => {
      got.requests++
      got.byPath[request.url] = (got.byPath[request.url] ?? 0) + 1
      response.writeHead(200, { 'content-type': 'application/x-protobuf' }).end()
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    endpoint: `http://127.0.0.1:${server.address().port}`,
    got,
    stop: () => new Promise((resolve) => server.close(resolve)),
  }
}

async function startServer(mode, url, endpoint) {
  const child = spawn(process.execPath, ['bench/server.js'], {
    cwd: root,
    env: {
      ...process.env,
      VARIANT,
      DATABASE_URL: url,
      POOL_MAX: String(POOL_MAX),
      APP_NAME: `bench-otel-${mode}`,
      BENCH_OTEL: setting(mode),
      BENCH_OTEL_ENDPOINT: endpoint,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const port = await new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (chunk) => {
      out += chunk
      if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]).port)
    })
    child.once('exit', (code) => reject(new Error(`server ${mode} exited with ${code}`)))
  })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  return {
    base: `http://127.0.0.1:${port}`,
    async stop() {
      child.kill('SIGTERM')
      const killer = setTimeout(() => child.kill('SIGKILL'), 3_000)
      await exited
      clearTimeout(killer)
    },
  }
}

function getJson(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        let body = ''
        res.on('data', (chunk) => {
          body += chunk
        })
        res.on('end', () => resolve(JSON.parse(body)))
      })
      .on('error', reject)
  })
}

const randomItem = () => `/items/${1 + Math.floor(Math.random() * ITEMS)}`

/** One S1 measurement, and the server's CPU per answered request (µs). */
async function throughput(base) {
  const before = await getJson(`${base}/cpu`)
  const result = await closedLoop({ url: base, connections: 64, durationMs: DURATION_MS, paths: randomItem })
  const after = await getJson(`${base}/cpu`)
  return { ...result, cpuUs: ((after.cpuMs - before.cpuMs) * 1000) / (result.answered + 1) }
}

async function main() {
  const db = await startDatabase()
  const sink = await startSink()
  const servers = {}
  console.log(`PostgreSQL ${db.version} (${db.kind}), node ${process.version}, ${os.cpus().length} CPUs`)
  console.log(`load average at start: ${loadavg()}`)
  console.log(
    `S1 on ${VARIANT}: 64 clients, pool ${POOL_MAX}, ${ROUNDS} rounds of ${DURATION_MS} ms per mode (${MODES.join(', ')})\n`,
  )
  try {
    for (const mode of MODES) {
      servers[mode] = await startServer(mode, db.url, sink.endpoint)
      await closedLoop({ url: servers[mode].base, connections: 64, durationMs: 1_500, paths: randomItem })
    }
    const runs = Object.fromEntries(MODES.map((mode) => [mode, []]))
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < MODES.length; i++) {
        const mode = MODES[(i + round) % MODES.length]
        const r = await throughput(servers[mode].base)
        runs[mode].push(r)
        console.log(
          `round ${round + 1} ${mode.padEnd(4)}: ${fmt(r.okPerS)} req/s, p99 ${fmt(r.ok99, 1)} ms, non-2xx ${r.refused + r.other}, server CPU ${fmt(r.cpuUs)} µs/request`,
        )
      }
    }
    const medians = Object.fromEntries(MODES.map((mode) => [mode, medianOf(runs[mode])]))
    console.log('\nmedians:')
    for (const mode of MODES) {
      const m = medians[mode]
      console.log(
        `  ${mode.padEnd(4)} ${fmt(m.okPerS)} req/s, p99 ${fmt(m.ok99, 1)} ms, ${fmt(m.cpuUs)} µs CPU/request`,
      )
    }
    console.log('\nratios to off (median of per-round ratios):')
    for (const mode of MODES.filter((m) => m !== 'off')) {
      const rate = pairedRatio(medians[mode], medians.off)
      const cpu = pairedRatio(medians[mode], medians.off, 'cpuUs')
      console.log(
        `  ${mode.padEnd(4)} throughput ${fmt(rate, 3)}× (${fmt((rate - 1) * 100, 1)} %), server CPU per request ${fmt(cpu, 3)}×`,
      )
    }
    console.log(
      `\nOTLP sink: ${sink.got.requests} exports (${Object.entries(sink.got.byPath)
        .map(([path, n]) => `${n} ${path}`)
        .join(', ')}), ${fmt(sink.got.bytes / 1024)} KiB`,
    )
    console.log(`load average at end: ${loadavg()}`)
  } finally {
    await Promise.all(Object.values(servers).map((server) => server.stop()))
    await sink.stop()
    await db.stop()
  }
}

await main()

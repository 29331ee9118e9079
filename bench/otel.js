import http from 'node:http'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { closedLoop } from './load.js'
import { ITEMS, startDatabase } from './postgres.js'
import { spawnServer } from './spawn-server.js'
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

function startServer(mode, url, endpoint) {
  return spawnServer({
    cwd: root,
    env: {
      VARIANT,
      DATABASE_URL: url,
      POOL_MAX: String(POOL_MAX),
      APP_NAME: `bench-otel-${mode}`,
      BENCH_OTEL: setting(mode),
      BENCH_OTEL_ENDPOINT: endpoint,
    },
    label: mode,
  })
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

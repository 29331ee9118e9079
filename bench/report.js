// docs/benchmarks.md and the SVG charts, written by hand (no chart library).
import { writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { pairedRatio, roundRatios, totalOver } from './stats.js'

const docs = fileURLToPath(new URL('../docs/', import.meta.url))
const colors = {
  suite: '#1b7f3b',
  'suite-pipelined': '#65a30d',
  'suite-off': '#7a7a7a',
  'suite-rollback': '#a16207',
  baseline: '#9333ea',
  raw: '#c2410c',
  'fastify-postgres': '#1d4ed8',
}
const fmt = (n, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '–')
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;')

/** What admission control cost in S1, said so that run-to-run noise reads as noise. */
function admissionCost(on, off) {
  const cost = 100 * (1 - on / off)
  if (cost >= 0) return `cost ${fmt(cost)}% in this run (suite against \`backpressure: false\`)`
  return `made no measurable difference (the variant with it was ${fmt(-cost)}% faster in this run: run-to-run noise)`
}

function frame(title, width, height, body) {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">
<rect width="${width}" height="${height}" fill="#fff"/>
<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>
${body}
</svg>
`
}

function legend(names, x, y) {
  return names
    .map(
      ([key, label], i) =>
        `<rect x="${x}" y="${y + i * 18 - 9}" width="12" height="12" fill="${colors[key]}"/><text x="${x + 18}" y="${y + i * 18 + 1}">${esc(label)}</text>`,
    )
    .join('\n')
}

/** Lines over x points; `log` puts y on a log10 scale. */
function lineChart({ title, xLabel, yLabel, xs, series, log = false, reference }) {
  const width = 720
  const height = 420
  const m = { left: 70, right: 250, top: 40, bottom: 50 }
  const w = width - m.left - m.right
  const h = height - m.top - m.bottom
  const values = series.flatMap((s) => s.ys).filter((v) => Number.isFinite(v) && (!log || v > 0))
  if (reference) values.push(reference.y)
  const yMax = log ? 10 ** Math.ceil(Math.log10(Math.max(...values))) : niceMax(Math.max(...values) * 1.1)
  const yMin = log ? 10 ** Math.floor(Math.log10(Math.max(0.1, Math.min(...values)))) : 0
  const sy = (v) =>
    log
      ? m.top + h - ((Math.log10(Math.max(v, yMin)) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * h
      : m.top + h - (v / yMax) * h
  const sx = (i) => m.left + (xs.length === 1 ? w / 2 : (i / (xs.length - 1)) * w)
  const ticks = log
    ? Array.from({ length: Math.log10(yMax / yMin) + 1 }, (_, i) => yMin * 10 ** i)
    : Array.from({ length: 6 }, (_, i) => (yMax / 5) * i)
  let body = `<line x1="${m.left}" y1="${m.top + h}" x2="${m.left + w}" y2="${m.top + h}" stroke="#333"/>
<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + h}" stroke="#333"/>\n`
  for (const t of ticks) {
    body += `<line x1="${m.left}" y1="${sy(t)}" x2="${m.left + w}" y2="${sy(t)}" stroke="#ddd"/><text x="${m.left - 6}" y="${sy(t) + 4}" text-anchor="end">${fmt(t, t > 0 && t < 1 ? 1 : 0)}</text>\n`
  }
  xs.forEach((x, i) => {
    body += `<text x="${sx(i)}" y="${m.top + h + 18}" text-anchor="middle">${esc(x)}</text>\n`
  })
  body += `<text x="${m.left + w / 2}" y="${height - 10}" text-anchor="middle">${esc(xLabel)}</text>
<text transform="translate(16 ${m.top + h / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>\n`
  if (reference) {
    body += `<line x1="${m.left}" y1="${sy(reference.y)}" x2="${m.left + w}" y2="${sy(reference.y)}" stroke="#000" stroke-dasharray="5 4"/><text x="${m.left + w - 4}" y="${sy(reference.y) - 5}" text-anchor="end">${esc(reference.label)}</text>\n`
  }
  for (const s of series) {
    const points = s.ys
      .map((y, i) => (Number.isFinite(y) ? `${sx(i).toFixed(1)},${sy(y).toFixed(1)}` : null))
      .filter(Boolean)
    body += `<polyline fill="none" stroke="${colors[s.key]}" stroke-width="2" points="${points.join(' ')}"/>\n`
    for (const p of points) {
      const [px, py] = p.split(',')
      body += `<circle cx="${px}" cy="${py}" r="3" fill="${colors[s.key]}"/>\n`
    }
  }
  body += legend(
    series.map((s) => [s.key, s.label]),
    m.left + w + 20,
    m.top + 10,
  )
  return frame(title, width, height, body)
}

/** Grouped bars: one group per category, one bar per series, y on a log10 scale. */
function barChart({ title, yLabel, categories, series }) {
  const width = 720
  const height = 420
  const m = { left: 70, right: 250, top: 40, bottom: 50 }
  const w = width - m.left - m.right
  const h = height - m.top - m.bottom
  const values = series.flatMap((s) => s.ys).filter((v) => Number.isFinite(v) && v > 0)
  const yMax = 10 ** Math.ceil(Math.log10(Math.max(...values)))
  const yMin = 10 ** Math.floor(Math.log10(Math.min(...values)))
  const sy = (v) => m.top + h - ((Math.log10(Math.max(v, yMin)) - Math.log10(yMin)) / Math.log10(yMax / yMin)) * h
  const group = w / categories.length
  const bar = (group * 0.8) / series.length
  let body = `<line x1="${m.left}" y1="${m.top + h}" x2="${m.left + w}" y2="${m.top + h}" stroke="#333"/>
<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + h}" stroke="#333"/>\n`
  for (let t = yMin; t <= yMax; t *= 10) {
    body += `<line x1="${m.left}" y1="${sy(t)}" x2="${m.left + w}" y2="${sy(t)}" stroke="#ddd"/><text x="${m.left - 6}" y="${sy(t) + 4}" text-anchor="end">${fmt(t, t > 0 && t < 1 ? 1 : 0)}</text>\n`
  }
  categories.forEach((c, ci) => {
    const x0 = m.left + ci * group + group * 0.1
    body += `<text x="${m.left + ci * group + group / 2}" y="${m.top + h + 18}" text-anchor="middle">${esc(c)}</text>\n`
    series.forEach((s, si) => {
      const v = s.ys[ci]
      if (!Number.isFinite(v)) return
      const y = sy(v)
      body += `<rect x="${(x0 + si * bar).toFixed(1)}" y="${y.toFixed(1)}" width="${(bar - 2).toFixed(1)}" height="${(m.top + h - y).toFixed(1)}" fill="${colors[s.key]}"><title>${esc(s.label)}: ${fmt(v, 1)} ms</title></rect>\n`
    })
  })
  body += `<text transform="translate(16 ${m.top + h / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>\n`
  body += legend(
    series.map((s) => [s.key, s.label]),
    m.left + w + 20,
    m.top + 10,
  )
  return frame(title, width, height, body)
}

function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v))
  return [1, 2, 2.5, 5, 10].map((k) => k * p).find((n) => n >= v)
}

/** "one overload that is" or "5 overloads that are": the uncounted warm-up (1 in older saved results). */
const warmUps = (r, word) => {
  const n = r.warmOverloads ?? 1
  return n === 1 ? `one ${word} that is` : `${n} ${word}s that are`
}

function notes(r) {
  const out = []
  out.push(
    `**The machine.** Two cores, shared with other work while this ran (load average ${r.loadStart ?? '?'} at the start, ${r.loadEnd ?? '?'} at the end). The load generator, the server under test and PostgreSQL compete for those cores, so absolute numbers move by tens of percent from run to run; the ratios come from variants alternated within each round. Latencies include the scheduling delays of a loaded machine: the open-loop generator reports its own lag (how late it sent requests) in the output below.`,
  )
  if (r.S1) {
    const { suite, raw } = r.S1
    const off = r.S1['suite-off']
    const fpg = r.S1['fastify-postgres']
    const pipelined = r.S1['suite-pipelined']
    const rollback = r.S1['suite-rollback']
    const { baseline } = r.S1
    const per = (x) =>
      `${fmt(x.cpuUs)} µs of server CPU (GC ${fmt(x.gcUs, 1)}) and ${Number.isFinite(x.pgCpuUs) ? `${fmt(x.pgCpuUs)} µs of PostgreSQL CPU` : 'PostgreSQL CPU not measured'}`
    out.push(
      `**S1.** The default path (a connection per request from its first statement to its response, metrics, health and admission control on, the full session reset after every request) reached ${fmt(pairedRatio(suite, raw), 2)}× raw postgres.js and ${fmt(pairedRatio(suite, fpg), 2)}× @fastify/postgres. Per request it spent ${per(suite)}, against ${per(raw)} for raw postgres.js. Raw postgres.js queues every statement on one of its 10 connections as it comes, so several requests' statements travel in one write and one read; a connection per request gets one statement per round trip and the connection waits idle between the answer and the request's next step. The session reset (one message queued behind the request, never awaited: BEGIN, CLOSE ALL, SET SESSION AUTHORIZATION DEFAULT, RESET ALL, DISCARD TEMP, DISCARD SEQUENCES, UNLISTEN *, the advisory-lock release and the SQL-level prepared-statement check (one statement prepared once per connection), COMMIT) is most of the PostgreSQL difference.${rollback ? ` With \`sessionReset: 'rollback'\` (the opt-in that only ends a transaction left open, blind to session state) the same route reached ${fmt(pairedRatio(rollback, raw), 2)}× raw (${per(rollback)}).` : ''}${baseline ? ` The default lease of an earlier commit (\`${esc(r.baselineLabel ?? 'baseline')}\`, BENCH_BASELINE: its own server, alternated with these in the same rounds) reached ${fmt(pairedRatio(baseline, raw), 2)}× raw (${per(baseline)}); today's default served ${fmt(pairedRatio(suite, baseline), 2)}× its requests.` : ''}${pipelined ? ` With the routes declared \`pipeline: true\` (session-free: requests share connections, their statements queued together as postgres.js does) the suite reached ${fmt(pairedRatio(pipelined, raw), 2)}× raw.` : ''}${off ? ` Without admission control: ${fmt(pairedRatio(off, raw), 2)}× raw; admission control itself (two \`onRequest\` hooks: the pool check and @fastify/under-pressure) ${admissionCost(suite.okPerS, off.okPerS)}.` : ''} Raw postgres.js gives none of the guarantees the suite exists for (bounded queue, aborts cancelled, leases returned exactly once, nothing of one request's session seen by the next).`,
    )
  }
  if (r.S1t) {
    const { suite, raw } = r.S1t
    const fpg = r.S1t['fastify-postgres']
    out.push(
      `**S1t.** The same GET in a transaction: a \`transaction: true\` route against postgres.js's own \`sql.begin(tx => tx\`select …\`)\` in a plain route (a reserved connection, BEGIN, the statement, COMMIT) reached ${fmt(pairedRatio(suite, raw), 2)}×${fpg ? `, and ${fmt(pairedRatio(suite, fpg), 2)}× @fastify/postgres's \`transact\`` : ''}${r.S1t.baseline ? `; the previous release, ${fmt(pairedRatio(r.S1t.baseline, raw), 2)}× sql.begin` : ''}. The route's COMMIT travels with the reset behind it (one write, no extra round trip); the statement log of a transaction route is BEGIN, the statement, COMMIT, then the reset, answered while the next request's statement is already queued.`,
    )
  }
  if (r.S2o) {
    const at2 = r.S2o[2]
    if (at2) {
      const worst = ['raw', 'fastify-postgres'].filter((k) => at2[k])
      out.push(
        `**S2o.** Without admission control, an open-loop arrival rate above capacity turns into an unbounded queue: at 2× ${worst.map((k) => `${k} answered ${fmt(at2[k].goodput)} req/s within 1 s with a 2xx p99 of ${fmt(at2[k].ok99)} ms and left ${fmt(at2[k].unanswered)} requests unanswered`).join('; ')}. The core alone (\`backpressure: false\`) is bounded by its own queue cap and acquire timeout, but its refusals come only after a full queue and after the body is parsed. With admission control the queue stays at about \`maxDelay\` of work: goodput ${fmt(at2.suite.goodput)} req/s, 2xx p99 ${fmt(at2.suite.ok99)} ms. Capacity is nominal (${r.capacity} req/s assumes a connection is back the instant \`pg_sleep(0.02)\` ends); every variant pays some overhead per lease on top, more when the machine is loaded${at2['suite-off'] ? ` — the core without admission control, its queue full all along, drained ${fmt(at2['suite-off'].goodput)} req/s, so admission control keeps the pool at its real capacity while cutting the 2xx p99 from ${fmt(at2['suite-off'].ok99)} ms to ${fmt(at2.suite.ok99)} ms` : ''}. The 503 latency is measured from when the generator issued the request, so it includes the generator's and the server's scheduling on the shared cores${at2.suite.floorP99 === undefined ? '' : `: the same generator at the same rate against \`/health/live\` (no database, nothing queued), right after each overload, had a p99 of ${fmt(at2.suite.floorP99, 1)} ms (median over the suite's rounds), the floor this machine puts under any answer`}.${at2['suite-pipelined'] ? ` With the route pipelined (\`suite-pipelined\`) goodput was ${fmt(at2['suite-pipelined'].goodput)} req/s (${fmt((100 * at2['suite-pipelined'].goodput) / r.capacity)}% of capacity) with a 2xx p99 of ${fmt(at2['suite-pipelined'].ok99)} ms: a connection per request idles between one statement's answer and the next request's statement reaching the server, where a shared connection has the next statement queued already.` : ''}`,
      )
    }
  }
  if (r.S2) {
    const { suite, raw } = r.S2
    const off = r.S2['suite-off']
    out.push(
      `**S2.** 400 clients that retry at once turn every refusal into a new request. The suite holds refusals back for \`retryStorm.delay\` while refusals arrive more than \`retryStorm.factor\`× faster than the pool drains, so its goodput stayed at ${fmt(pairedRatio(suite, raw), 2)}× raw postgres.js with a 2xx p99 of ${fmt(suite.ok99)} ms against raw's ${fmt(raw.ok99)} ms${off ? `; the core alone, refusing at once after parsing, managed ${fmt(off.okPerS)} 2xx/s` : ''}${r.S2['suite-pipelined'] ? `; with the route pipelined, ${fmt(pairedRatio(r.S2['suite-pipelined'], raw), 2)}× raw and a 2xx p99 of ${fmt(r.S2['suite-pipelined'].ok99)} ms` : ''}. The p99 is the load generator's: 400 connections in one autocannon process on the same two cores. Against a route with no database at all (\`/health/live\`, measured on the suite's server before each of its rounds), the same 400-connection closed loop had a p99 of ${fmt(suite.baselineP99)} ms; \`BENCH_TRACE=1\` prints the server's own time for the 2xx of \`/slow\` (from routing to response), which in tuning runs had a p99 of about 100–130 ms.`,
    )
  }
  return out
}

export async function writeReport(r, { variants, s1Variants = {}, lines }) {
  const names = Object.entries(variants)
  const s1Names = [...names, ...Object.entries(s1Variants)]
  const out = []
  const md = (s = '') => out.push(s)
  md('# Benchmarks')
  md()
  md('Generated by `npm run bench` (`node bench/run.js`); every number below comes from one run,')
  md('variants alternated round by round on the same machine and database. Not part of the tests.')
  md('`DATABASE_URL` runs it against an existing server instead of an embedded PostgreSQL 18; `BENCH_DURATION`')
  md('(ms per measurement), `BENCH_ROUNDS`, `BENCH_S1_ROUNDS` and `BENCH_S1_DURATION` shorten a run;')
  md('`BENCH_ONLY=S0,S1,S2o,S2` and `BENCH_LOADS` narrow one (its results are saved, this page is left as it is);')
  md('`node bench/run.js --report FILE` rewrites this page from the results a run saved.')
  md(
    'The cancel stress run (`node bench/stress-cancel.js`, not part of this page) is in [stress-cancel.md](stress-cancel.md).',
  )
  md()
  md(
    `Run ${r.startedAt.toISOString()} · PostgreSQL ${r.db} · node ${process.version} · ${r.cpus} CPUs (${esc(r.cpuModel)}), shared with other work · ${r.durationMs} ms per measurement, ${r.rounds} rounds, the variants' order rotated from round to round (values are the median of the rounds, ratios the median of the per-round ratios; maxima are the maxima).`,
  )
  md()
  md('Variants, each its own server process with pool `max` 10 and no logger:')
  md()
  for (const [key, label] of names) md(`- **${label}** (\`${key}\`)`)
  for (const [key, label] of Object.entries(s1Variants)) md(`- **${label}** (\`${key}\`, S1 only)`)
  md()
  md(
    "`suite` is what a user gets from the README's first route: the default lease (a connection per request from its first statement to its response), the full session reset after every request, metrics, health and admission control on. `suite-pipelined` declares the two routes under load (`GET /items/:id`, `GET /slow`), which rely on no session state, `config: { db: { pipeline: true } }`: their requests share connections, up to `pool.pipelineDepth` (8) each. S0 uses a third route with the default lease in every suite variant.",
  )
  md()
  md('## Targets')
  md()
  md('Judged on `suite`, the default path (the pipelined target on `suite-pipelined`).')
  md()
  md('| target | measured | |')
  md('|---|---|---|')
  for (const t of r.targets) md(`| ${esc(t.name)} | ${esc(t.measured)} | ${t.pass ? 'PASS' : '**FAIL**'} |`)
  md()
  if (r.S0) {
    md('## S0 — abort safety')
    md()
    md('20 clients start a query that holds a connection 500 ms and hang up after 150 ms; 800 ms later the app')
    md('must serve 20 requests, and the suite must report no lease held.')
    md()
    md('| variant | aborted queries still running 200 ms after the hang-up | served after | leases held |')
    md('|---|---|---|---|')
    for (const x of r.S0) md(`| ${variants[x.variant]} | ${x.stillRunning} | ${x.served}/20 | ${x.leaked ?? 'n/a'} |`)
    md()
  }
  if (r.S1) {
    md('## S1 — throughput, GET by id')
    md()
    md(
      `autocannon, 64 connections, pool 10, \`select id, name from … where id = $1\` on 10 000 rows; all suite features on. Every variant's server is started and warmed up (the same load for 1.5 s) first and runs throughout; then ${r.s1?.rounds ?? r.rounds} rounds measure each variant for ${r.s1?.durationMs ?? r.durationMs} ms, in an order rotated from round to round, so that the variants of a round run within seconds of each other.`,
    )
    md()
    md(
      '| variant | req/s | × raw postgres.js | × @fastify/postgres | p50 ms | p99 ms | non-2xx (all rounds) | server CPU µs/request | of which GC | PostgreSQL CPU µs/request | load generator CPU µs/request |',
    )
    md('|---|---|---|---|---|---|---|---|---|---|---|')
    for (const [key, label] of s1Names) {
      const x = r.S1[key]
      if (x === undefined) continue
      md(
        `| ${label} | ${fmt(x.okPerS)} | ${fmt(pairedRatio(x, r.S1.raw), 2)} | ${fmt(pairedRatio(x, r.S1['fastify-postgres']), 2)} | ${fmt(x.ok50, 1)} | ${fmt(x.ok99, 1)} | ${totalOver(x, 'refused', 'other')} | ${fmt(x.cpuUs)} | ${fmt(x.gcUs, 1)} | ${fmt(x.pgCpuUs)} | ${fmt(x.clientCpuUs)} |`,
      )
    }
    md()
    md(
      "Server CPU is the server process's (`process.cpuUsage()` across the measurement), GC the part of it in garbage collection; PostgreSQL CPU is the whole server's across the measurement (its processes' utime + stime from /proc, exited backends included; embedded server only), while only that variant runs; the load generator's is this process's. All per 2xx answered.",
    )
    md()
    const perRound = (key, base) =>
      roundRatios(r.S1[key], r.S1[base])
        .map((ratio) => fmt(ratio, 2))
        .join(', ')
    md(
      `Ratios round by round: the suite against raw postgres.js ${perRound('suite', 'raw')}; against @fastify/postgres ${perRound('suite', 'fastify-postgres')}. Req/s and latencies in the table are medians over the rounds; the ratios are the medians of these per-round ratios (each round runs the variants one after the other, in an order rotated from round to round).`,
    )
    md()
  }
  if (r.S1t) {
    md('## S1t — the same GET in a transaction')
    md()
    md(
      "`GET /tx/:id` in the same rounds as S1: the suite's `config: { db: { transaction: true } }` route, postgres.js's `sql.begin(tx => tx`select …`)`, @fastify/postgres's `transact`.",
    )
    md()
    md('| variant | req/s | × postgres.js sql.begin | p99 ms | server CPU µs/request | PostgreSQL CPU µs/request |')
    md('|---|---|---|---|---|---|')
    for (const [key, label] of s1Names) {
      const x = r.S1t[key]
      if (x === undefined) continue
      md(
        `| ${label} | ${fmt(x.okPerS)} | ${fmt(pairedRatio(x, r.S1t.raw), 2)} | ${fmt(x.ok99, 1)} | ${fmt(x.cpuUs)} | ${fmt(x.pgCpuUs)} |`,
      )
    }
    md()
  }
  const files = []
  if (r.S2o) {
    const factors = Object.keys(r.S2o)
      .map(Number)
      .sort((a, b) => a - b)
    md('## S2o — open-loop overload on a 20 ms route')
    md()
    md(
      `Every variant's server is started once for the scenario and serves all its rounds, as a long-running service would; before the first round each goes through ${warmUps(r, 'overload')} not counted (\`/slow\` at 2× for 1 s each), so that what is measured is a warm process rather than the compiler at work (on a fresh server V8 was still optimising ~40 functions a second 3 s into an overload, and settled after ~6 s; its compiler thread shares the two cores with the server, the generator and PostgreSQL). Before each measurement a server serves \`/slow\` at half its capacity for 0.5 s, the state a service is in before an overload. Then requests leave at a fixed rate whatever the answers (a custom generator over plain keep-alive sockets, one request in flight per socket, latency counted from when each request was due; node:http's client cost it ~370 µs of CPU per request, a third of a core at 1000 req/s taken from the server under test, about twice what this one costs). \`/slow\` holds its connection 20 ms: capacity ≈ ${r.capacity} req/s. Goodput = 2xx answered within 1 s of being due and before the last request was due, per second of that window. Requests still unanswered 2 s after the last was sent are cut ("unanswered"). Waiters are sampled every 50 ms from \`/stats\` (the suite: \`app.pgPool.stats().waiting\`; @fastify/postgres: \`pool.waitingCount\`; postgres.js: in-flight queries minus \`max\`). The generator keeps at most 1024 sockets open: 1014 waiters means the rest of the backlog waited in the client, counted in its latency. After each measurement the run waits until nothing is left waiting for the database (raw postgres.js and @fastify/postgres go on serving the backlog of requests the generator gave up on) before the next variant is measured.`,
    )
    md()
    md(
      '| offered | variant | goodput req/s | 2xx p50 ms | 2xx p99 ms | 503 | 503 p99 ms | unanswered | waiters max | /health/live max ms |',
    )
    md('|---|---|---|---|---|---|---|---|---|---|')
    for (const f of factors) {
      for (const [key, label] of names) {
        const x = r.S2o[f][key]
        md(
          `| ${f}× (${fmt(f * r.capacity)}/s) | ${label} | ${fmt(x.goodput)} | ${fmt(x.ok50, 1)} | ${fmt(x.ok99, 1)} | ${fmt(x.refused)} | ${fmt(x.refused99, 1)} | ${fmt(x.unanswered)} | ${fmt(x.waitersMax)} | ${fmt(x.liveMax, 1)} |`,
        )
      }
    }
    md()
    md('![goodput against offered load](bench-goodput.svg)')
    md()
    md('![p99 latency of successes against offered load](bench-p99.svg)')
    md()
    md('![latency percentiles at 2× capacity](bench-latency.svg)')
    md()
    const xs = factors.map((f) => `${fmt(f * r.capacity)}/s (${f}×)`)
    await writeFile(
      `${docs}bench-goodput.svg`,
      lineChart({
        title: 'Goodput (2xx within 1 s) against offered load',
        xLabel: 'offered load (open loop)',
        yLabel: 'goodput, req/s',
        xs,
        series: names.map(([key, label]) => ({ key, label, ys: factors.map((f) => r.S2o[f][key].goodput) })),
        reference: { y: r.capacity, label: `capacity ≈ ${r.capacity} req/s` },
      }),
    )
    await writeFile(
      `${docs}bench-p99.svg`,
      lineChart({
        title: 'p99 latency of successful requests against offered load',
        xLabel: 'offered load (open loop)',
        yLabel: 'p99 of 2xx, ms (log scale)',
        xs,
        log: true,
        series: names.map(([key, label]) => ({ key, label, ys: factors.map((f) => r.S2o[f][key].ok99) })),
      }),
    )
    const at2 = r.S2o[2]
    if (at2) {
      await writeFile(
        `${docs}bench-latency.svg`,
        barChart({
          title: `Latency of successful requests at 2× capacity (${fmt(2 * r.capacity)} req/s offered)`,
          yLabel: 'ms (log scale)',
          categories: ['p50', 'p90', 'p99', '503 p99'],
          series: names.map(([key, label]) => ({
            key,
            label,
            ys: [at2[key].ok50, at2[key].ok90, at2[key].ok99, at2[key].refused > 0 ? at2[key].refused99 : Number.NaN],
          })),
        }),
      )
    }
    files.push('docs/bench-goodput.svg', 'docs/bench-p99.svg', 'docs/bench-latency.svg')
  }
  if (r.S2) {
    md('## S2 — closed-loop retry storm')
    md()
    md(
      `autocannon, 400 connections on \`/slow\`; each connection sends its next request as soon as the previous one is answered, a 503 included. As in S2o, every variant's server runs through all rounds, after ${warmUps(r, 'storm')} not counted (1 s each); each measurement follows 0.5 s at half capacity, and the run waits for backlogs to drain between measurements.`,
    )
    md()
    md('| variant | 2xx/s | × raw postgres.js | 2xx p50 ms | 2xx p99 ms | 503/s | 503 p99 ms | errors |')
    md('|---|---|---|---|---|---|---|---|')
    for (const [key, label] of names) {
      const x = r.S2[key]
      md(
        `| ${label} | ${fmt(x.okPerS)} | ${fmt(pairedRatio(x, r.S2.raw), 2)} | ${fmt(x.ok50, 1)} | ${fmt(x.ok99, 1)} | ${fmt(x.refused / x.windowS)} | ${fmt(x.refused99, 1)} | ${fmt(x.errors)} |`,
      )
    }
    md()
  }
  md('## Reading the numbers')
  md()
  for (const paragraph of notes(r)) {
    md(paragraph)
    md()
  }
  md('## Output of the run')
  md()
  md('```')
  for (const line of lines) md(line)
  md('```')
  md()
  await writeFile(`${docs}benchmarks.md`, out.join('\n'))
  files.unshift('docs/benchmarks.md')
  return files
}

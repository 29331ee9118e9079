// One benchmark server process. VARIANT picks the database layer; every variant serves the
// same routes so the load generator cannot tell them apart:
//   GET /items/:id   one indexed row          GET /slow     holds a connection 20 ms
//   GET /hold        holds a connection 500 ms (abort test)
//   GET /health/live liveness, no database    GET /stats    { waiting } for the sampler
//   GET /cpu         process CPU time, GC counts and refusals by reason, read before and after a measurement
//   GET /tx/:id      the same row in a transaction (a route transaction; postgres.js's sql.begin)
// Variants: suite (all features on, the default lease: a connection per request, the session
// reset included), suite-pipelined (the same with routes pipelined: config.db.pipeline),
// suite-off (the default lease, backpressure: false), suite-rollback (the default lease,
// sessionReset: 'rollback'), raw, fastify-postgres. BENCH_TRACE=1 prints waits, holds, refusals,
// event-loop delay and GC.
// BENCH_OTEL (off|noop|sdk) adds @fastify-pg-pool/otel to the suite variants (bench/otel.js).
// Prints {"port":N} on stdout once listening.
import { constants, monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks'
import v8 from 'node:v8'
import Fastify from 'fastify'

const variant = process.env.VARIANT
const url = process.env.DATABASE_URL
const max = Number(process.env.POOL_MAX ?? 10)
const applicationName = process.env.APP_NAME ?? `bench-${variant}`

const app = Fastify({ logger: false })
let waiting = () => 0
const shedCounts = {}

const itemById = (id) => Number.parseInt(id, 10) || 1

const suites = new Set(['suite', 'suite-pipelined', 'suite-off', 'suite-rollback'])
if (suites.has(variant)) {
  const { default: pgPool, channels } = await import('fastify-pg-pool')
  await app.register(pgPool, {
    connection: url,
    pool: { max, applicationName, ...(variant === 'suite-rollback' ? { sessionReset: 'rollback' } : {}) },
    health: {},
    metrics: {},
    // BENCH_BACKPRESSURE (JSON) overrides the defaults while tuning; the report uses the defaults.
    backpressure: variant === 'suite-off' ? false : JSON.parse(process.env.BENCH_BACKPRESSURE ?? '{}'),
    // BENCH_SUITE_OPTS (JSON) overrides any plugin option, e.g. {"metrics":false}, to weigh a part.
    ...JSON.parse(process.env.BENCH_SUITE_OPTS ?? '{}'),
  })
  // ---- BENCH_OTEL (bench/otel.js): @fastify-pg-pool/otel on the suite's pool ---------------------
  //   off (default): not registered; noop: registered with no SDK (the API's no-op providers);
  //   sdk: the SDK first, spans through a BatchSpanProcessor and metrics through a periodic reader
  //   (every BENCH_OTEL_INTERVAL ms, default 1000), both exported as OTLP/HTTP protobuf to
  //   BENCH_OTEL_ENDPOINT (bench/otel.js runs a sink there).
  const benchOtel = process.env.BENCH_OTEL ?? 'off'
  if (!['off', 'noop', 'sdk'].includes(benchOtel))
    throw new Error(`BENCH_OTEL must be off, noop or sdk, got ${benchOtel}`)
  if (benchOtel === 'sdk') {
    const [{ context, metrics, trace }, { AsyncLocalStorageContextManager }, sdkTrace, sdkMetrics, traces, meters] =
      await Promise.all([
        import('@opentelemetry/api'),
        import('@opentelemetry/context-async-hooks'),
        import('@opentelemetry/sdk-trace-base'),
        import('@opentelemetry/sdk-metrics'),
        import('@opentelemetry/exporter-trace-otlp-proto'),
        import('@opentelemetry/exporter-metrics-otlp-proto'),
      ])
    const endpoint = process.env.BENCH_OTEL_ENDPOINT ?? 'http://127.0.0.1:4318'
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
    const exporter = new traces.OTLPTraceExporter({ url: `${endpoint}/v1/traces` })
    trace.setGlobalTracerProvider(
      new sdkTrace.BasicTracerProvider({ spanProcessors: [new sdkTrace.BatchSpanProcessor(exporter)] }),
    )
    const reader = new sdkMetrics.PeriodicExportingMetricReader({
      exporter: new meters.OTLPMetricExporter({ url: `${endpoint}/v1/metrics` }),
      exportIntervalMillis: Number(process.env.BENCH_OTEL_INTERVAL ?? 1_000),
    })
    metrics.setGlobalMeterProvider(new sdkMetrics.MeterProvider({ readers: [reader] }))
  }
  if (benchOtel !== 'off') {
    const { default: pgPoolOtel } = await import('@fastify-pg-pool/otel')
    await app.register(pgPoolOtel)
  }
  // ---- end BENCH_OTEL -------------------------------------------------------------------------
  // Neither route relies on session state: both may share a connection (config.db.pipeline) in
  // suite-pipelined; the other suites keep the default lease (a connection per request).
  const routeDb = variant === 'suite-pipelined' ? { config: { db: { pipeline: true } } } : {}
  app.get('/items/:id', routeDb, async (request) => {
    const [row] = await request.db`select id, name from fpp_bench_items where id = ${itemById(request.params.id)}`
    return row ?? null
  })
  app.get('/slow', routeDb, async (request) => {
    await request.db`select pg_sleep(0.02)`
    return { ok: true }
  })
  app.get('/hold', async (request) => {
    await request.db`select pg_sleep(0.5)`
    return { ok: true }
  })
  app.get('/tx/:id', { config: { db: { transaction: true } } }, async (request) => {
    const [row] = await request.db`select id, name from fpp_bench_items where id = ${itemById(request.params.id)}`
    return row ?? null
  })
  waiting = () => app.pgPool.stats().waiting
  // Refusals by reason, read with /cpu: a round that refused says why.
  channels.refusal.subscribe((message) => {
    shedCounts[message.reason] = (shedCounts[message.reason] ?? 0) + 1
  })
  if (process.env.BENCH_TRACE) {
    const waits = []
    const holds = []
    app.pgPool.on('acquire', (ms) => waits.push(ms))
    app.pgPool.on('release', (ms) => holds.push(ms))
    const loopDelay = monitorEventLoopDelay({ resolution: 1 })
    loopDelay.enable()
    const served = []
    app.addHook('onResponse', (_request, reply, done) => {
      if (reply.statusCode < 300) served.push(reply.elapsedTime)
      done()
    })
    const failed = {}
    app.pgPool.on('acquireError', (reason) => {
      failed[reason] = (failed[reason] ?? 0) + 1
    })
    app.addHook('onClose', async () => {
      const q = (a, p) => a.sort((x, y) => x - y)[Math.floor((a.length - 1) * p)]?.toFixed(1)
      process.stderr.write(
        `trace ${variant}: event loop delay p50 ${(loopDelay.percentile(50) / 1e6).toFixed(1)} p99 ${(loopDelay.percentile(99) / 1e6).toFixed(1)} max ${(loopDelay.max / 1e6).toFixed(1)} ms\n`,
      )
      process.stderr.write(
        `trace ${variant}: server time of 2xx p50 ${q(served, 0.5)} p99 ${q(served, 0.99)} max ${q(served, 1)}\n`,
      )
      process.stderr.write(
        `trace ${variant}: wait p50 ${q(waits, 0.5)} p90 ${q(waits, 0.9)} p99 ${q(waits, 0.99)} max ${q(waits, 1)}; hold p50 ${q(holds, 0.5)} p90 ${q(holds, 0.9)} p99 ${q(holds, 0.99)} (${holds.length}); shed ${JSON.stringify(shedCounts)}; acquireError ${JSON.stringify(failed)}\n`,
      )
    })
  }
  app.get('/stats', { config: { db: false } }, async () => app.pgPool.stats())
} else if (variant === 'raw') {
  const { default: postgres } = await import('postgres')
  const sql = postgres(url, { max, connection: { application_name: applicationName }, onnotice: () => {} })
  // postgres.js exposes no queue length: requests past `max` that are in a query wait inside
  // postgres.js (queued on its connections), so in-flight database requests minus `max` is it.
  let inFlight = 0
  const tracked = async (work) => {
    inFlight++
    try {
      return await work()
    } finally {
      inFlight--
    }
  }
  app.get('/items/:id', async (request) =>
    tracked(async () => {
      const [row] = await sql`select id, name from fpp_bench_items where id = ${itemById(request.params.id)}`
      return row ?? null
    }),
  )
  app.get('/slow', async () =>
    tracked(async () => {
      await sql`select pg_sleep(0.02)`
      return { ok: true }
    }),
  )
  app.get('/hold', async () =>
    tracked(async () => {
      await sql`select pg_sleep(0.5)`
      return { ok: true }
    }),
  )
  // postgres.js's own transaction: one reserved connection, BEGIN, the statement, COMMIT.
  app.get('/tx/:id', async (request) =>
    tracked(async () => {
      const [row] = await sql.begin(
        (tx) => tx`select id, name from fpp_bench_items where id = ${itemById(request.params.id)}`,
      )
      return row ?? null
    }),
  )
  waiting = () => Math.max(0, inFlight - max)
  app.addHook('onClose', () => sql.end({ timeout: 1 }))
} else if (variant === 'fastify-postgres') {
  const { default: fastifyPostgres } = await import('@fastify/postgres')
  await app.register(fastifyPostgres, { connectionString: url, max, application_name: applicationName })
  app.get('/items/:id', async (request) => {
    const { rows } = await app.pg.query('select id, name from fpp_bench_items where id = $1', [
      itemById(request.params.id),
    ])
    return rows[0] ?? null
  })
  app.get('/slow', async () => {
    await app.pg.query('select pg_sleep(0.02)')
    return { ok: true }
  })
  app.get('/hold', async () => {
    await app.pg.query('select pg_sleep(0.5)')
    return { ok: true }
  })
  app.get('/tx/:id', async (request) =>
    app.pg.transact(async (client) => {
      const { rows } = await client.query('select id, name from fpp_bench_items where id = $1', [
        itemById(request.params.id),
      ])
      return rows[0] ?? null
    }),
  )
  waiting = () => app.pg.pool.waitingCount
} else {
  throw new Error(`unknown VARIANT ${variant}`)
}

if (!app.hasRoute({ method: 'GET', url: '/health/live' })) app.get('/health/live', async () => ({ status: 'ok' }))
if (!app.hasRoute({ method: 'GET', url: '/stats' })) app.get('/stats', async () => ({ waiting: waiting() }))

const gc = { count: 0, ms: 0, maxMs: 0, byKind: {} }
// The longest GC pause since the previous read of /cpu, and its kind.
let longestSinceRead = 0
let longestKind = 'none'
const gcKinds = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'scavenge',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'mark-compact',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental marking',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weak callbacks',
}
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    gc.count++
    gc.ms += entry.duration
    gc.maxMs = Math.max(gc.maxMs, entry.duration)
    const kind = gcKinds[entry.detail?.kind] ?? 'other'
    gc.byKind[kind] = (gc.byKind[kind] ?? 0) + 1
    if (entry.duration > longestSinceRead) {
      longestSinceRead = entry.duration
      longestKind = kind
    }
  }
}).observe({ entryTypes: ['gc'] })
app.get('/cpu', { config: { db: false } }, async () => {
  const { user, system } = process.cpuUsage()
  const gcLongest = { ms: longestSinceRead, kind: longestKind }
  longestSinceRead = 0
  longestKind = 'none'
  // The young generation's size now (V8 grows and shrinks it): scavenges come once per half of it allocated.
  const newSpace = v8.getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')
  return {
    cpuMs: (user + system) / 1000,
    gcCount: gc.count,
    gcByKind: { ...gc.byKind },
    gcMs: gc.ms,
    gcLongest,
    newSpaceMB: (newSpace?.space_size ?? 0) / 2 ** 20,
    shed: { ...shedCounts },
  }
})

await app.listen({ port: 0, host: '127.0.0.1' })
process.stdout.write(`${JSON.stringify({ port: app.server.address().port })}\n`)
const stop = () =>
  app.close().then(() => {
    if (process.env.BENCH_TRACE) {
      const { user, system } = process.cpuUsage()
      process.stderr.write(
        `trace ${variant}: gc ${gc.count} pauses, ${gc.ms.toFixed(0)} ms, longest ${gc.maxMs.toFixed(1)} ms\n`,
      )
      process.stderr.write(
        `trace ${variant}: cpu ${((user + system) / 1e6).toFixed(2)} s over ${process.uptime().toFixed(1)} s\n`,
      )
    }
    process.exit(0)
  })
process.on('SIGTERM', stop)
process.on('SIGINT', stop)

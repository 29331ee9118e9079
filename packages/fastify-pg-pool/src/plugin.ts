import pgPoolBackpressure, { type PgPoolBackpressureOptions } from '@fastify-pg-pool/backpressure'
import pgPoolCore, { optionKit, type PgPoolCoreOptions, type PgPoolView } from '@fastify-pg-pool/core'
import pgPoolHealth, { type PgPoolHealthOptions } from '@fastify-pg-pool/health'
import pgPoolMetrics, { type PgPoolMetricsOptions } from '@fastify-pg-pool/metrics'
import type { FastifyInstance, FastifyPluginAsync, RegisterOptions } from 'fastify'
import fp from 'fastify-plugin'

const { asFeature, checkKeys, coreOptionAliases, coreOptionKeys, fastifyRegisterKeys } = optionKit

export interface PgPoolOptions extends PgPoolCoreOptions {
  /** `/health/live`, `/health/ready`, `/health`; false disables them. */
  health?: PgPoolHealthOptions | false | undefined
  /** `/metrics`; false disables it. */
  metrics?: PgPoolMetricsOptions | false | undefined
  /** Admission control and process pressure; false disables it. */
  backpressure?: PgPoolBackpressureOptions | false | undefined
  /**
   * OpenTelemetry spans and metrics (@fastify-pg-pool/otel; needs @opentelemetry/api and an SDK
   * registered first). `traceContext: true` also shows each lease's traceparent and route in
   * pg_stat_activity's application_name. Default false.
   */
  otel?: PgPoolOtelPart | false | undefined
}

/**
 * The options of @fastify-pg-pool/otel (its README), described by shape: its types import
 * @opentelemetry/api, an optional peer dependency this package must type-check without.
 */
export interface PgPoolOtelPart {
  /** Where spans go (a TracerProvider). Default: the global provider, as the SDK registered it. */
  tracerProvider?: { getTracer(name: string, version?: string): unknown } | undefined
  /** Where metrics go (a MeterProvider). Default: the global provider. */
  meterProvider?: { getMeter(name: string, version?: string): unknown } | undefined
  /** Spans of connection waits, statements and route transactions, refusal events. Default true. */
  traces?: boolean | undefined
  /** The database-client pool and operation metrics. Default true. */
  metrics?: boolean | undefined
  /** `db.query.text` on statement spans (never parameter values). Default false. */
  queryText?: boolean | undefined
  /** `db.client.connection.pool.name` of a pool. */
  poolName?: ((view: PgPoolView) => string) | undefined
  /** The pools to instrument. Default: every pool of every instance. */
  pools?: ((app: FastifyInstance) => readonly PgPoolView[]) | undefined
  /** Each lease's traceparent and route in pg_stat_activity (application_name). Default false. */
  traceContext?: boolean | undefined
}

/** The umbrella's keys and the core's: a typo among them is refused with the key meant. */
const knownKeys: readonly string[] = [...coreOptionKeys, 'health', 'metrics', 'backpressure', 'otel']

/**
 * The otel part's keys, `traceContext` (the umbrella's own) among them: checked here, so that a
 * misspelled `traceContext` is named as the key meant (the otel plugin does not know it).
 */
const otelPartKeys: readonly string[] = Object.keys({
  tracerProvider: true,
  meterProvider: true,
  traces: true,
  metrics: true,
  queryText: true,
  poolName: true,
  pools: true,
  traceContext: true,
} satisfies Record<keyof PgPoolOtelPart, true>)

/** Registered once per app: a second registration (a named instance) shares them. */
const sharedParts = {
  metrics: '@fastify-pg-pool/metrics',
  health: '@fastify-pg-pool/health',
  backpressure: '@fastify-pg-pool/backpressure',
  otel: '@fastify-pg-pool/otel',
} as const

/**
 * What the first registration in an app decided, for the ones after it (named instances): they
 * add a database, and the health, metrics and tracing the first registered serve it too.
 */
interface FirstRegistration {
  readonly labelLease: PgPoolCoreOptions['leaseApplicationName']
}
/**
 * Keyed by the app's server, which every encapsulated context of one app shares (as the core keys
 * its registry): a registration in a sibling plugin, or at the root after a child's, is a later
 * one too, not a first. Deleted on close: a new app may be built on the same server.
 */
const firstRegistrations = new WeakMap<object, FirstRegistration>()

/**
 * @fastify-pg-pool/otel, loaded at run time. Not found (a bundle, which cannot follow a name in a
 * variable, or an install without @opentelemetry/api): refused with a coded error that says what
 * to do, instead of Node's ERR_MODULE_NOT_FOUND.
 */
async function loadOtel(name: string): Promise<typeof import('@fastify-pg-pool/otel')> {
  try {
    return (await import(name)) as typeof import('@fastify-pg-pool/otel')
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw error
    throw optionKit.invalidOption(
      'otel',
      `${name} could not be loaded (${code}): install it with @opentelemetry/api; a bundle loads it at run time, so keep it out of the bundle (esbuild --external:${name}) and installed beside it, or register pgPoolOtel from ${name} yourself`,
    )
  }
}

const isEmpty = (value: unknown) =>
  value === undefined || (typeof value === 'object' && value !== null && Object.keys(value).length === 0)

const plugin: FastifyPluginAsync<PgPoolOptions> = async (app, opts) => {
  checkKeys('', opts, knownKeys, { ignore: fastifyRegisterKeys, aliases: coreOptionAliases })
  const { health, metrics, backpressure, otel, ...rest } = opts as PgPoolOptions & RegisterOptions
  const { prefix, logLevel, logSerializers: _, ...core } = rest
  const parts = {
    health: asFeature('health', health),
    metrics: asFeature('metrics', metrics),
    backpressure: asFeature('backpressure', backpressure),
    otel: otel === undefined ? (false as const) : asFeature('otel', otel),
  }
  const first = firstRegistrations.get(app.server)
  // Options there would be ignored: refused instead (nothing, or {}, is fine).
  for (const part of ['health', 'metrics', 'otel'] as const) {
    if (first !== undefined && !isEmpty(opts[part])) {
      throw optionKit.invalidOption(
        part,
        `${sharedParts[part]} belongs to the first fastify-pg-pool registration of this app, and serves every instance: give its options (or false) there`,
      )
    }
  }
  // Admission control comes with the default instance's registration and judges every
  // instance's routes (each by its own pool): its options are given there, once.
  if (core.name !== undefined && !isEmpty(backpressure)) {
    throw optionKit.invalidOption(
      'backpressure',
      "admission control comes with the registration without a name and judges every instance's routes: give its options (or false) there",
    )
  }
  if (parts.otel !== false) checkKeys('otel', parts.otel, otelPartKeys, { ignore: fastifyRegisterKeys })
  const { traceContext = false, ...otelOptions } = parts.otel === false ? {} : parts.otel
  if (typeof traceContext !== 'boolean') {
    throw optionKit.invalidOption('otel.traceContext', `expected a boolean, got ${optionKit.describe(traceContext)}`)
  }
  // Loaded only when asked for: @opentelemetry/api is an optional peer dependency. A name in a
  // variable, so that bundlers leave the import to run time instead of requiring the API.
  const otelPackage: string = sharedParts.otel
  const otelModule = parts.otel === false ? undefined : await loadOtel(otelPackage)
  const labelLease: PgPoolCoreOptions['leaseApplicationName'] =
    first?.labelLease ??
    (traceContext && otelModule !== undefined
      ? (_request, route) => otelModule.traceContextApplicationName(route)
      : undefined)
  // Trace context sets application_name on the server session: not behind PgBouncer in
  // transaction mode, where that session is other clients' too (refused when asked for here,
  // left out for a later instance behind PgBouncer).
  if (traceContext && core.pool?.pgbouncer === true) {
    throw optionKit.invalidOption(
      'otel.traceContext',
      'it sets application_name on the server session, which PgBouncer in transaction mode hands to other clients; remove it or pool.pgbouncer',
    )
  }
  if (labelLease !== undefined && core.pool?.pgbouncer !== true && core.leaseApplicationName === undefined) {
    core.leaseApplicationName = labelLease
  }
  // Fastify's prefix and logLevel, given to the umbrella, apply to the routes it declares: the
  // health and metrics routes (each part's own options win).
  const routeDefaults = { ...(prefix === undefined ? {} : { prefix }) }
  await app.register(pgPoolCore, core)
  if (first === undefined) {
    const server = app.server
    firstRegistrations.set(server, { labelLease })
    app.addHook('onClose', (_instance, done) => {
      firstRegistrations.delete(server)
      done()
    })
  }
  if (first === undefined && parts.metrics !== false) {
    await app.register(pgPoolMetrics, { ...routeDefaults, ...parts.metrics })
  }
  if (first === undefined && parts.health !== false) {
    await app.register(pgPoolHealth, {
      ...routeDefaults,
      ...(logLevel === undefined ? {} : { logLevel }),
      ...parts.health,
    })
  }
  if (core.name === undefined && parts.backpressure !== false) {
    await app.register(pgPoolBackpressure, parts.backpressure)
  }
  if (first === undefined && otelModule !== undefined) {
    await app.register(otelModule.default, otelOptions as Parameters<typeof otelModule.default>[1])
  }
}

/** Core pool, health routes, metrics and admission control in one registration. */
export const pgPool = fp(plugin, { name: 'fastify-pg-pool', fastify: '5.x' })

import { optionKit } from '@fastify-pg-pool/core'
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { prometheusContentType, Registry } from 'prom-client'

const { boolean, describe, integer, invalidOption, nested, prefixed, resolveTable, routePath, routePrefix } = optionKit

/** Histogram bucket upper bounds, in seconds. */
export interface MetricsBuckets {
  /** Waiting for a connection (acquires that got one). */
  acquire?: readonly number[] | undefined
  /** Holding a connection, per route. */
  lease?: readonly number[] | undefined
  /** Opening a server connection. */
  connect?: readonly number[] | undefined
  /** HTTP request duration. */
  http?: readonly number[] | undefined
}

/** An `onRequest` hook of the metrics route: async (reply to refuse), or calling `done`. */
export type MetricsOnRequestHook = (
  this: FastifyInstance,
  request: FastifyRequest,
  reply: FastifyReply,
  done: HookHandlerDoneFunction,
) => unknown

type OnRequest = MetricsOnRequestHook

export interface PgPoolMetricsOptions {
  /** prom-client registry to register into. Default: a new `Registry` owned by this app. */
  registry?: Registry | undefined
  /** Prepended to every metric name. Default `'pg_pool_'`. */
  namePrefix?: string | undefined
  /**
   * Fastify's register option, honoured: prepended to `path` (`'/internal'` serves
   * `/internal/metrics`). A fastify-plugin escapes Fastify's own prefixing. Default none.
   */
  prefix?: string
  /** Route that serves the metrics; `false` adds no route. Default `'/metrics'`. */
  path?: string | false | undefined
  /** `onRequest` hook(s) of the metrics route only: authentication, IP allow-lists. */
  onRequest?: OnRequest | OnRequest[] | undefined
  /** HTTP request duration histogram (turn off when fastify-metrics already measures). Default true. */
  httpMetrics?: boolean | undefined
  /** prom-client's Node process metrics (`collectDefaultMetrics`, unprefixed `process_*`, `nodejs_*`). Default false. */
  defaultMetrics?: boolean | undefined
  /** Histogram buckets, seconds; each given list replaces that histogram's default. */
  buckets?: MetricsBuckets | undefined
  /** Distinct route label values per app; later routes share the value `other`. Default 100. */
  maxRoutes?: number | undefined
}

export interface ResolvedMetricsOptions {
  readonly registry: Registry
  readonly namePrefix: string
  /** The route's path, `prefix` included. */
  readonly path: string | false
  readonly onRequest: OnRequest[]
  readonly httpMetrics: boolean
  readonly defaultMetrics: boolean
  readonly buckets: Required<{ [K in keyof MetricsBuckets]: readonly number[] }>
  readonly maxRoutes: number
}

/** Default histogram buckets, seconds: from a millisecond to the seconds a timeout takes. */
export const defaultBuckets = Object.freeze({
  acquire: Object.freeze([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
  lease: Object.freeze([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]),
  connect: Object.freeze([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
  http: Object.freeze([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
})

/** Names that other Prometheus plugins (fastify-metrics, prom-client) give these options. */
const aliases = {
  endpoint: 'path',
  metricsPath: 'path',
  metricPrefix: 'namePrefix',
  register: 'registry',
  routeMetrics: 'httpMetrics',
  collectDefaultMetrics: 'defaultMetrics',
}

/** Duck-typed so a registry from another copy of prom-client works too. */
function isRegistry(value: unknown): value is Registry {
  if (value instanceof Registry) return true
  const r = value as Partial<Registry> | null
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.registerMetric === 'function' &&
    typeof r.removeSingleMetric === 'function' &&
    typeof r.getMetricsAsJSON === 'function' &&
    typeof r.metrics === 'function'
  )
}

const registry: optionKit.OptionSpec<Registry> = {
  read(raw, name) {
    if (raw === undefined) return new Registry()
    if (!isRegistry(raw)) throw invalidOption(name, `expected a prom-client Registry, got ${describe(raw)}`)
    // OpenMetrics is negotiated per scrape; a registry switched to it would rename counters.
    if (raw.contentType !== undefined && raw.contentType !== prometheusContentType) {
      throw invalidOption(name, 'expected a registry with the Prometheus content type (the default)')
    }
    return raw
  },
}

const namePrefix: optionKit.OptionSpec<string> = {
  read(raw, name) {
    if (raw === undefined) return 'pg_pool_'
    if (typeof raw !== 'string' || !/^([a-zA-Z_:][a-zA-Z0-9_:]*)?$/.test(raw)) {
      throw invalidOption(name, `expected a metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*), got ${describe(raw)}`)
    }
    return raw
  },
}

// `prefix` named the metric name prefix before 0.2: say so to whoever still passes one.
const prefix: optionKit.OptionSpec<string> = {
  read(raw, name) {
    if (typeof raw === 'string' && raw !== '' && !raw.startsWith('/')) {
      throw invalidOption(
        name,
        `expected a route prefix starting with /, got ${describe(raw)} (metric names: namePrefix)`,
      )
    }
    return routePrefix.read(raw, name)
  },
}

const onRequest: optionKit.OptionSpec<OnRequest[]> = {
  read(raw, name) {
    const hooks = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]
    if (!hooks.every((hook) => typeof hook === 'function')) {
      throw invalidOption(name, `expected a function or an array of functions, got ${describe(raw)}`)
    }
    return Object.freeze([...hooks]) as OnRequest[]
  },
}

function buckets(fallback: readonly number[]): optionKit.OptionSpec<readonly number[]> {
  return {
    read(raw, name) {
      if (raw === undefined) return fallback
      if (
        !Array.isArray(raw) ||
        raw.length === 0 ||
        !raw.every((b, i) => typeof b === 'number' && Number.isFinite(b) && b > 0 && (i === 0 || b > raw[i - 1]))
      ) {
        throw invalidOption(name, `expected increasing positive finite numbers, got ${describe(raw)}`)
      }
      return Object.freeze([...raw])
    },
  }
}

const table = {
  registry,
  namePrefix,
  prefix,
  path: routePath('/metrics'),
  onRequest,
  httpMetrics: boolean(true),
  defaultMetrics: boolean(false),
  buckets: nested({
    acquire: buckets(defaultBuckets.acquire),
    lease: buckets(defaultBuckets.lease),
    connect: buckets(defaultBuckets.connect),
    http: buckets(defaultBuckets.http),
  } satisfies Record<keyof MetricsBuckets, unknown>),
  maxRoutes: integer({ min: 1, default: 100 }),
} satisfies Record<keyof PgPoolMetricsOptions, unknown>

/** Validates the options once, at register, and freezes them. */
export function resolveMetricsOptions(opts: PgPoolMetricsOptions | undefined): ResolvedMetricsOptions {
  // Fastify passes its register options through the same object; `prefix` is honoured.
  const { prefix, path, ...given } = resolveTable('metrics', opts, table, {
    ignore: ['logLevel', 'logSerializers'],
    aliases,
  })
  return Object.freeze({ ...given, path: prefixed(prefix, path) })
}

import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { prometheusContentType, Registry } from 'prom-client'
import { invalidOption } from './errors.js'

/** Histogram bucket upper bounds, in seconds. */
export interface MetricsBuckets {
  /** Waiting for a connection (acquires that got one). */
  acquire?: readonly number[]
  /** Holding a connection, per route. */
  lease?: readonly number[]
  /** Opening a server connection. */
  connect?: readonly number[]
  /** HTTP request duration. */
  http?: readonly number[]
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
  registry?: Registry
  /** Prepended to every metric name. Default `'pg_pool_'`. */
  prefix?: string
  /** Route that serves the metrics; `false` adds no route. Default `'/metrics'`. */
  path?: string | false
  /** `onRequest` hook(s) of the metrics route only: authentication, IP allow-lists. */
  onRequest?: OnRequest | OnRequest[]
  /** HTTP request duration histogram (turn off when fastify-metrics already measures). Default true. */
  httpMetrics?: boolean
  /** prom-client's Node process metrics (`collectDefaultMetrics`, unprefixed `process_*`, `nodejs_*`). Default false. */
  defaultMetrics?: boolean
  /** Histogram buckets, seconds; each given list replaces that histogram's default. */
  buckets?: MetricsBuckets
  /** Distinct route label values per app; later routes share the value `other`. Default 100. */
  maxRoutes?: number
}

export interface ResolvedMetricsOptions {
  readonly registry: Registry
  readonly prefix: string
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

const knownKeys = new Set([
  'registry',
  'prefix',
  'path',
  'onRequest',
  'httpMetrics',
  'defaultMetrics',
  'buckets',
  'maxRoutes',
])

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value)
  return Array.isArray(value) ? 'an array' : typeof value
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

function resolveBuckets(name: string, given: unknown, fallback: readonly number[]): readonly number[] {
  if (given === undefined) return fallback
  if (
    !Array.isArray(given) ||
    given.length === 0 ||
    !given.every((b, i) => typeof b === 'number' && Number.isFinite(b) && b > 0 && (i === 0 || b > given[i - 1]))
  ) {
    throw invalidOption(`buckets.${name}`, `expected increasing positive finite numbers, got ${describe(given)}`)
  }
  return Object.freeze([...given])
}

/** Validates the options once, at register, and freezes them. */
export function resolveMetricsOptions(opts: PgPoolMetricsOptions | undefined): ResolvedMetricsOptions {
  const given: Record<string, unknown> = { ...opts }
  for (const key of Object.keys(given)) {
    if (!knownKeys.has(key)) throw invalidOption(key, 'unknown option')
  }

  const registry = given.registry ?? new Registry()
  if (!isRegistry(registry))
    throw invalidOption('registry', `expected a prom-client Registry, got ${describe(registry)}`)
  // OpenMetrics is negotiated per scrape; a registry switched to it would rename counters.
  if (registry.contentType !== undefined && registry.contentType !== prometheusContentType) {
    throw invalidOption('registry', 'expected a registry with the Prometheus content type (the default)')
  }

  const prefix = given.prefix ?? 'pg_pool_'
  if (typeof prefix !== 'string' || !/^([a-zA-Z_:][a-zA-Z0-9_:]*)?$/.test(prefix)) {
    throw invalidOption('prefix', `expected a metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*), got ${describe(prefix)}`)
  }

  const path = given.path ?? '/metrics'
  if (path !== false && (typeof path !== 'string' || !path.startsWith('/'))) {
    throw invalidOption('path', `expected false or a path starting with /, got ${describe(path)}`)
  }

  const rawHooks = given.onRequest ?? []
  const onRequest = (Array.isArray(rawHooks) ? rawHooks : [rawHooks]) as OnRequest[]
  if (!onRequest.every((hook) => typeof hook === 'function')) {
    throw invalidOption('onRequest', `expected a function or an array of functions, got ${describe(rawHooks)}`)
  }

  const flags: Record<string, boolean> = {}
  for (const [name, fallback] of [
    ['httpMetrics', true],
    ['defaultMetrics', false],
  ] as const) {
    const raw = given[name] ?? fallback
    if (typeof raw !== 'boolean') throw invalidOption(name, `expected a boolean, got ${describe(raw)}`)
    flags[name] = raw
  }

  const maxRoutes = given.maxRoutes ?? 100
  if (typeof maxRoutes !== 'number' || !Number.isInteger(maxRoutes) || maxRoutes < 1) {
    throw invalidOption('maxRoutes', `expected an integer >= 1, got ${describe(maxRoutes)}`)
  }

  const rawBuckets = given.buckets ?? {}
  if (typeof rawBuckets !== 'object' || rawBuckets === null || Array.isArray(rawBuckets)) {
    throw invalidOption('buckets', `expected an object, got ${describe(rawBuckets)}`)
  }
  const bucketsGiven = rawBuckets as Record<string, unknown>
  for (const key of Object.keys(bucketsGiven)) {
    if (!(key in defaultBuckets)) throw invalidOption(`buckets.${key}`, 'unknown histogram')
  }
  const buckets = Object.freeze({
    acquire: resolveBuckets('acquire', bucketsGiven.acquire, defaultBuckets.acquire),
    lease: resolveBuckets('lease', bucketsGiven.lease, defaultBuckets.lease),
    connect: resolveBuckets('connect', bucketsGiven.connect, defaultBuckets.connect),
    http: resolveBuckets('http', bucketsGiven.http, defaultBuckets.http),
  })

  return Object.freeze({
    registry,
    prefix,
    path,
    onRequest: Object.freeze(onRequest) as OnRequest[],
    httpMetrics: flags.httpMetrics ?? true,
    defaultMetrics: flags.defaultMetrics ?? false,
    buckets,
    maxRoutes,
  })
}

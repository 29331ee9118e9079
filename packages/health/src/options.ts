import { errors } from '@fastify-pg-pool/core'
import type { LogLevel } from 'fastify'

/** What the readiness routes need from the database. */
export type RequireDatabase = 'always' | 'startup'

/** How much a readiness or liveness body shows. */
export type HealthDetails = 'full' | 'public'

/** Options of `@fastify-pg-pool/health`; every duration is in milliseconds. */
export interface PgPoolHealthOptions {
  /** Liveness route: answers while the process does, never touches the database. `false` disables it. Default `'/health/live'`. */
  livePath?: string | false
  /** Readiness route: ping, pool saturation, shutdown. `false` disables it. Default `'/health/ready'`. */
  readyPath?: string | false
  /** Same answer as the readiness route, for a single probe path. `false` disables it. Default `'/health'`. */
  healthPath?: string | false
  /** A ping that has not answered by then fails (`postgres:responseTime` is `fail`). Default 1000. */
  pingTimeout?: number
  /** A ping slower than this makes `postgres:responseTime` `warn`. 0 disables. Default 500. */
  pingWarn?: number
  /**
   * How long a ping result, success or failure, answers later probes. Concurrent probes always
   * share one ping in flight. 0 pings for every probe that finds no ping in flight. Default 1000.
   */
  cacheTime?: number
  /** Waiting acquires, with every connection leased, from which readiness is `warn`. 0 disables. Default 1. */
  warnWaiting?: number
  /**
   * Waiting acquires from which readiness is `fail` (503). 0 disables.
   * Default: the pool's queue cap now, `stats().waitingCap` (at least 1): `maxWaiting`, or the
   * connections the pool can still open when more. The queue is full and new requests are refused
   * anyway.
   */
  failWaiting?: number
  /**
   * `'always'`: readiness fails whenever the ping fails. `'startup'`: readiness fails until the first
   * successful ping; later ping failures make it `warn` (200), so a database outage shared by every
   * replica does not empty the Service. Default `'always'`.
   */
  requireDatabase?: RequireDatabase
  /** `'full'`: status and checks. `'public'`: the status alone. Default `'full'`. */
  details?: HealthDetails
  /**
   * From `preClose` on, wait this long before Fastify stops accepting connections, readiness
   * answering 503 meanwhile (for load balancers without a Kubernetes `preStop` hook; needs
   * Fastify's `return503OnClosing: false`). Default 0.
   */
  drainDelay?: number
  /** Log level of the health routes (probes every few seconds add up). Default: the app's. */
  logLevel?: LogLevel
  /** `serviceId` of the full bodies. */
  serviceId?: string
  /** `description` of the full bodies. */
  description?: string
  /** `version` of the full bodies (the public version of the service). */
  version?: string
  /** `releaseId` of the full bodies (the build or release). */
  releaseId?: string
}

export interface ResolvedHealthOptions {
  readonly livePath: string | false
  readonly readyPath: string | false
  readonly healthPath: string | false
  readonly pingTimeout: number
  readonly pingWarn: number
  readonly cacheTime: number
  readonly warnWaiting: number
  /** undefined: the pool's waitingCap. */
  readonly failWaiting: number | undefined
  readonly requireDatabase: RequireDatabase
  readonly details: HealthDetails
  readonly drainDelay: number
  readonly logLevel: LogLevel | undefined
  readonly serviceId: string | undefined
  readonly description: string | undefined
  readonly version: string | undefined
  readonly releaseId: string | undefined
}

const integers = {
  pingTimeout: { min: 1, default: 1_000 },
  pingWarn: { min: 0, default: 500 },
  cacheTime: { min: 0, default: 1_000 },
  warnWaiting: { min: 0, default: 1 },
  failWaiting: { min: 0, default: undefined },
  drainDelay: { min: 0, default: 0 },
} as const

const paths = { livePath: '/health/live', readyPath: '/health/ready', healthPath: '/health' } as const
const texts = ['serviceId', 'description', 'version', 'releaseId', 'logLevel'] as const
const choices = { requireDatabase: ['always', 'startup'], details: ['full', 'public'] } as const
const known = new Set<string>([...Object.keys(integers), ...Object.keys(paths), ...texts, ...Object.keys(choices)])

function invalid(name: string, problem: string): Error {
  return new errors.FST_PG_POOL_INVALID_OPTION(`health.${name}`, problem)
}

function show(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : typeof value === 'object' ? typeof value : String(value)
}

/** Validates the options once, at register; throws FST_PG_POOL_INVALID_OPTION naming the option. */
export function resolveHealthOptions(options: PgPoolHealthOptions | undefined): ResolvedHealthOptions {
  const given: Record<string, unknown> = { ...options }
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(given)) {
    // fastify passes register-time options (prefix, logLevel) through the same object.
    if (!known.has(key) && key !== 'prefix') throw invalid(key, 'unknown option')
  }
  for (const [name, spec] of Object.entries(integers)) {
    const value = given[name]
    if (value === undefined) out[name] = spec.default
    else if (typeof value !== 'number' || !Number.isInteger(value) || value < spec.min) {
      throw invalid(name, `expected an integer >= ${spec.min}, got ${show(value)}`)
    } else out[name] = value
  }
  for (const [name, fallback] of Object.entries(paths)) {
    const value = given[name] ?? fallback
    if (value !== false && (typeof value !== 'string' || !value.startsWith('/'))) {
      throw invalid(name, `expected a path starting with '/' or false, got ${show(value)}`)
    }
    out[name] = value
  }
  const enabled = Object.keys(paths).map((name) => out[name])
  const duplicate = enabled.find((path, i) => path !== false && enabled.indexOf(path) !== i)
  if (duplicate !== undefined) throw invalid('livePath', `two health routes share the path ${show(duplicate)}`)
  for (const name of texts) {
    const value = given[name]
    if (value !== undefined && (typeof value !== 'string' || value === '')) {
      throw invalid(name, `expected a non-empty string, got ${show(value)}`)
    }
    out[name] = value
  }
  for (const [name, allowed] of Object.entries(choices)) {
    const value = given[name] ?? allowed[0]
    if (!(allowed as readonly unknown[]).includes(value)) {
      throw invalid(name, `expected ${allowed.map((a) => `'${a}'`).join(' or ')}, got ${show(value)}`)
    }
    out[name] = value
  }
  return Object.freeze(out) as unknown as ResolvedHealthOptions
}

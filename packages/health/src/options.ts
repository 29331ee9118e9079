import { optionKit } from '@fastify-pg-pool/core'
import type { LogLevel } from 'fastify'

const { duration, integer, oneOf, prefixed, resolveTable, routePath, routePrefix, text, invalidOption, describe } =
  optionKit

/** What the readiness routes need from the database. */
export type RequireDatabase = 'always' | 'startup'

/** How much a readiness or liveness body shows. */
export type HealthDetails = 'full' | 'public'

/** Options of `@fastify-pg-pool/health`; every duration is in milliseconds, at most 2147483647. */
export interface PgPoolHealthOptions {
  /**
   * Fastify's register option, honoured: prepended to the three paths (`'/internal'` serves
   * `/internal/health/live`...). A fastify-plugin escapes Fastify's own prefixing. Default none.
   */
  prefix?: string
  /** Liveness route: answers while the process does, never touches the database. `false` disables it. Default `'/health/live'`. */
  livePath?: string | false | undefined
  /** Readiness route: ping, pool saturation, shutdown. `false` disables it. Default `'/health/ready'`. */
  readyPath?: string | false | undefined
  /** Same answer as the readiness route, for a single probe path. `false` disables it. Default `'/health'`. */
  healthPath?: string | false | undefined
  /** A ping that has not answered by then fails (`postgres:responseTime` is `fail`). Default 1000. */
  pingTimeout?: number | undefined
  /** A ping slower than this makes `postgres:responseTime` `warn`. 0 disables. Default 500. */
  pingWarn?: number | undefined
  /**
   * How long a ping result, success or failure, answers later probes. Concurrent probes always
   * share one ping in flight. 0 pings for every probe that finds no ping in flight. Default 1000.
   */
  cacheTime?: number | undefined
  /** Waiting acquires, with every connection leased, from which readiness is `warn`. 0 disables. Default 1. */
  warnWaiting?: number | undefined
  /**
   * Waiting acquires from which readiness is `fail` (503). 0 disables.
   * Default: the pool's queue cap now, `stats().waitingCap` (at least 1): `maxWaiting`, or the
   * connections the pool can still open when more. The queue is full and new requests are refused
   * anyway.
   */
  failWaiting?: number | undefined
  /**
   * `'always'`: readiness fails whenever the ping fails. `'startup'`: readiness fails until the first
   * successful ping; later ping failures make it `warn` (200), so a database outage shared by every
   * replica does not empty the Service. Default `'always'`.
   */
  requireDatabase?: RequireDatabase | undefined
  /**
   * Named instances whose primary fails readiness like the default instance's does. Every other
   * pool (another instance, a read replica) that fails makes readiness `warn`, not `fail`: the
   * routes that do not need it keep their pod in the Service. Default none: in an app without a
   * default instance, every instance's primary then.
   */
  requireInstances?: readonly string[] | undefined
  /** `'full'`: status and checks. `'public'`: the status alone. Default `'full'`. */
  details?: HealthDetails | undefined
  /**
   * From `preClose` on, wait this long before Fastify stops accepting connections, readiness
   * answering 503 meanwhile (for load balancers without a Kubernetes `preStop` hook; needs
   * Fastify's `return503OnClosing: false`). Default 0.
   */
  drainDelay?: number | undefined
  /** Log level of the health routes (probes every few seconds add up). Default: the app's. */
  logLevel?: LogLevel
  /** `serviceId` of the full bodies. */
  serviceId?: string | undefined
  /** `description` of the full bodies. */
  description?: string | undefined
  /** `version` of the full bodies (the public version of the service). */
  version?: string | undefined
  /** `releaseId` of the full bodies (the build or release). */
  releaseId?: string | undefined
}

export interface ResolvedHealthOptions {
  /** The routes' paths, `prefix` included. */
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
  readonly requireInstances: readonly string[]
  readonly details: HealthDetails
  readonly drainDelay: number
  readonly logLevel: LogLevel | undefined
  readonly serviceId: string | undefined
  readonly description: string | undefined
  readonly version: string | undefined
  readonly releaseId: string | undefined
}

const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const satisfies readonly LogLevel[]

const requireInstances: optionKit.OptionSpec<readonly string[]> = {
  read(raw, name) {
    if (raw === undefined) return Object.freeze([])
    if (!Array.isArray(raw) || !raw.every((item) => typeof item === 'string' && item !== '')) {
      throw invalidOption(name, `expected an array of instance names, got ${describe(raw)}`)
    }
    return Object.freeze([...raw])
  },
}

const table = {
  prefix: routePrefix,
  livePath: routePath('/health/live'),
  readyPath: routePath('/health/ready'),
  healthPath: routePath('/health'),
  pingTimeout: duration({ min: 1, default: 1_000 }),
  pingWarn: duration({ min: 0, default: 500 }),
  cacheTime: duration({ min: 0, default: 1_000 }),
  warnWaiting: integer({ min: 0, default: 1 }),
  failWaiting: integer({ min: 0, default: undefined }),
  requireDatabase: oneOf(['always', 'startup'], 'always'),
  requireInstances,
  details: oneOf(['full', 'public'], 'full'),
  drainDelay: duration({ min: 0, default: 0 }),
  logLevel: oneOf(logLevels, undefined),
  serviceId: text(undefined),
  description: text(undefined),
  version: text(undefined),
  releaseId: text(undefined),
} satisfies Record<keyof PgPoolHealthOptions, unknown>

/** Validates the options once, at register; throws FST_PG_POOL_INVALID_OPTION naming the option. */
export function resolveHealthOptions(options: PgPoolHealthOptions | undefined): ResolvedHealthOptions {
  // Fastify passes its register options through the same object; prefix and logLevel are honoured.
  const { prefix, ...given } = resolveTable('health', options, table, { ignore: ['logSerializers'] })
  const resolved = {
    ...given,
    livePath: prefixed(prefix, given.livePath),
    readyPath: prefixed(prefix, given.readyPath),
    healthPath: prefixed(prefix, given.healthPath),
  }
  const names = ['livePath', 'readyPath', 'healthPath'] as const
  const paths = names.map((name) => resolved[name])
  const duplicate = paths.find((path, i) => path !== false && paths.indexOf(path) !== i)
  if (duplicate !== undefined) {
    // Name the path the user gave, rather than the default it collides with.
    const sharing = names.filter((name) => resolved[name] === duplicate)
    const name = sharing.find((key) => options?.[key] !== undefined) ?? sharing[0]
    throw invalidOption(`health.${name}`, `two health routes share the path ${describe(duplicate)}`)
  }
  return Object.freeze(resolved)
}

import { optionKit, usesDatabase } from '@fastify-pg-pool/core'

const {
  asObject,
  closestName,
  describe,
  duration,
  feature,
  integer,
  invalidOption,
  isLiteralPath,
  number,
  resolveTable,
} = optionKit
/** Durations in ms feed timers: Node fires a longer one after 1 ms. */
const MAX_MS = optionKit.MAX_DURATION_MS

export type Priority = 'high' | 'normal' | 'low'

/**
 * Per-route options under `config.backpressure`. `false`: the route is never refused. An object
 * names its priority (a route without `config.backpressure` is `normal`): an object without it
 * (`{ priorty: 'low' }`, a typo) is a type error, as `register` refuses it.
 */
export type RouteBackpressureConfig =
  | false
  | {
      /**
       * `low` is refused first (at half the queue cap, or as soon as the oldest waiter has
       * waited past `target`); `high` only when the queue is at its cap.
       */
      priority: Priority | undefined
    }

/** Process pressure through @fastify/under-pressure; a threshold of 0 turns its check off. */
export interface ProcessPressureOptions {
  /** Mean event-loop delay (ms) over one sample above which requests are refused. Default 1000. */
  maxEventLoopDelay?: number | undefined
  /** Event-loop utilisation (0..1) above which requests are refused. Default 0 (off). */
  maxEventLoopUtilization?: number | undefined
  /** `heapUsed` bytes above which requests are refused. Default 0 (off). */
  maxHeapUsedBytes?: number | undefined
  /** RSS bytes above which requests are refused. Default 0 (off). */
  maxRssBytes?: number | undefined
  /** How often the process is sampled, ms (at least 50). Default 1000. */
  sampleInterval?: number | undefined
}

export interface PgPoolBackpressureOptions {
  /**
   * Queueing delay (ms) the pool may keep standing. When every request that got a connection
   * for one `interval` waited longer than this, the pool is overloaded, and requests expected
   * to wait longer than this are refused. Default 40.
   */
  target?: number | undefined
  /** How long (ms) waits must stay above `target` before the pool counts as overloaded. Default 100. */
  interval?: number | undefined
  /**
   * Expected wait (ms) above which a request is refused even before the queue counts as
   * standing: the largest burst absorbed, in queued work. At least `target`. Default 60.
   */
  maxDelay?: number | undefined
  /**
   * Retry storms: while refusals arrive more than `factor` times faster than the pool drains,
   * each refusal is answered after `delay` ms. `false` answers every refusal at once.
   * Default `{ factor: 10, delay: 500 }`.
   */
  retryStorm?: { factor?: number | undefined; delay?: number | undefined } | false | undefined
  /** Least `Retry-After` of a refusal, whole seconds. Default 1. */
  minRetryAfter?: number | undefined
  /** Most `Retry-After` of a refusal, whole seconds (at least `minRetryAfter`). Default 30. */
  maxRetryAfter?: number | undefined
  /**
   * @deprecated renamed `minRetryAfter` and `maxRetryAfter`: across the suite `retryAfter` is one
   * number of seconds (the core's `pool.retryAfter`), and bounds are `min*`/`max*`.
   */
  retryAfter?: { min?: number | undefined; max?: number | undefined } | undefined
  /**
   * Route prefixes never refused (besides routes with `config.db: false` or
   * `config.backpressure: false`). Default `['/health', '/metrics']`.
   */
  exempt?: readonly string[] | undefined
  /** Event-loop and memory pressure; `false` does not register @fastify/under-pressure. */
  process?: ProcessPressureOptions | false | undefined
}

export interface ResolvedProcessOptions {
  readonly maxEventLoopDelay: number
  readonly maxEventLoopUtilization: number
  readonly maxHeapUsedBytes: number
  readonly maxRssBytes: number
  readonly sampleInterval: number
}

export interface ResolvedBackpressureOptions {
  readonly target: number
  readonly interval: number
  readonly maxDelay: number
  readonly retryStorm: { readonly factor: number; readonly delay: number } | false
  readonly retryAfter: { readonly min: number; readonly max: number }
  readonly exempt: readonly string[]
  readonly process: ResolvedProcessOptions | false
}

const processTable = {
  maxEventLoopDelay: number({ min: 0, max: MAX_MS, default: 1000 }),
  maxEventLoopUtilization: number({ min: 0, max: 1, default: 0 }),
  maxHeapUsedBytes: number({ min: 0, default: 0 }),
  maxRssBytes: number({ min: 0, default: 0 }),
  // under-pressure samples the loop every 10 ms and reads a window without a sample as an
  // infinite delay: a shorter interval would refuse requests on an idle process.
  sampleInterval: duration({ min: 50, default: 1000 }),
} satisfies Record<keyof ProcessPressureOptions, unknown>

const exempt: optionKit.OptionSpec<readonly string[]> = {
  read(raw, name) {
    const prefixes = raw ?? ['/health', '/metrics']
    // Matched against a route's declared URL (`/items/:id`): Fastify's route syntax is fine here.
    const literal = (prefix: unknown) => typeof prefix === 'string' && prefix.startsWith('/') && isLiteralPath(prefix)
    if (!Array.isArray(prefixes) || !prefixes.every(literal)) {
      throw invalidOption(name, `expected an array of paths starting with /, got ${describe(raw)}`)
    }
    return Object.freeze(prefixes.map((prefix: string) => (prefix.length > 1 ? prefix.replace(/\/+$/, '') : prefix)))
  },
}

const table = {
  target: number({ above: 0, max: MAX_MS, default: 40 }),
  interval: number({ above: 0, max: MAX_MS, default: 100 }),
  // Default: max(60, target), below.
  maxDelay: number({ above: 0, max: MAX_MS, default: undefined }),
  retryStorm: feature({
    factor: number({ above: 0, default: 10 }),
    delay: number({ min: 0, max: MAX_MS, default: 500 }),
  }),
  minRetryAfter: integer({ min: 1, max: optionKit.MAX_RETRY_AFTER_SECONDS, default: 1 }),
  // Default: max(30, minRetryAfter), below.
  maxRetryAfter: integer({ min: 1, max: optionKit.MAX_RETRY_AFTER_SECONDS, default: undefined }),
  exempt,
  process: feature(processTable),
} satisfies Record<Exclude<keyof PgPoolBackpressureOptions, 'retryAfter'>, unknown>

/** Names other admission plugins give these options. */
const aliases = { underPressure: 'process', exclude: 'exempt', maxQueueDelay: 'maxDelay' }

const legacyRetryAfter = {
  min: integer({ min: 1, max: optionKit.MAX_RETRY_AFTER_SECONDS, default: undefined }),
  max: integer({ min: 1, max: optionKit.MAX_RETRY_AFTER_SECONDS, default: undefined }),
}

/** Validates the plugin options once, at register; throws FST_PG_POOL_INVALID_OPTION. */
export function resolveOptions(raw: unknown): ResolvedBackpressureOptions {
  let given = asObject('backpressure', raw)
  if (given.retryAfter !== undefined) {
    const legacy = resolveTable('backpressure.retryAfter', given.retryAfter, legacyRetryAfter)
    if (given.minRetryAfter !== undefined || given.maxRetryAfter !== undefined) {
      throw invalidOption('backpressure.retryAfter', 'renamed minRetryAfter and maxRetryAfter: give those alone')
    }
    const { retryAfter: _, ...rest } = given
    given = { ...rest, minRetryAfter: legacy.min, maxRetryAfter: legacy.max }
  }
  // Fastify's register options mean nothing to a plugin without routes.
  const options = resolveTable('backpressure', given, table, {
    ignore: ['prefix', 'logLevel', 'logSerializers'],
    extra: ['retryAfter'],
    aliases,
  })
  const maxDelay = options.maxDelay ?? Math.max(60, options.target)
  if (maxDelay < options.target) {
    throw invalidOption('backpressure.maxDelay', `expected at least target (${options.target}), got ${maxDelay}`)
  }
  const min = options.minRetryAfter
  const max = options.maxRetryAfter ?? Math.max(30, min)
  if (max < min)
    throw invalidOption('backpressure.maxRetryAfter', `expected at least minRetryAfter (${min}), got ${max}`)
  return Object.freeze({
    target: options.target,
    interval: options.interval,
    maxDelay,
    retryStorm: options.retryStorm,
    retryAfter: Object.freeze({ min, max }),
    exempt: options.exempt,
    process: options.process,
  })
}

/** The priority of a route, or null when it is never refused; throws on a bad `config.backpressure`. */
export function routePriority(
  url: string | undefined,
  config: { db?: unknown; backpressure?: unknown } | undefined,
  exempt: readonly string[],
): Priority | null {
  // No route (404): nothing to judge, nothing to check.
  if (url === undefined) return null
  const route = config?.backpressure
  // Checked before the exemptions: a typo on an exempt route (or one without a database) would
  // otherwise surface only once the route stops being exempt.
  const priority = route === undefined || route === false ? undefined : routeConfigPriority(url, route)
  // Routes that never use the database (the core's rule) do not load the pool.
  if (!usesDatabase(config) || route === false) return null
  for (const prefix of exempt) {
    if (prefix === '/' || url === prefix || url.startsWith(`${prefix}/`)) return null
  }
  return priority ?? 'normal'
}

function routeConfigPriority(url: string, route: unknown): Priority {
  if (route === null || typeof route !== 'object' || Array.isArray(route)) {
    throw invalidOption(`config.backpressure of ${url}`, `expected false or an object, got ${describe(route)}`)
  }
  const { priority = 'normal', ...rest } = route as { priority?: unknown }
  const unknown = Object.keys(rest)[0]
  if (unknown !== undefined) {
    const suggestion = closestName(unknown, ['priority'])
    const problem =
      suggestion === undefined ? 'unknown option; expected priority' : `unknown option; did you mean ${suggestion}?`
    throw invalidOption(`config.backpressure.${unknown} of ${url}`, problem)
  }
  if (priority !== 'high' && priority !== 'normal' && priority !== 'low') {
    throw invalidOption(
      `config.backpressure.priority of ${url}`,
      `expected 'high', 'normal' or 'low', got ${describe(priority)}`,
    )
  }
  return priority
}

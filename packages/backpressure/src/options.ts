import { invalidOption } from './errors.js'

export type Priority = 'high' | 'normal' | 'low'

/** Per-route options under `config.backpressure`. `false`: the route is never refused. */
export type RouteBackpressureConfig =
  | false
  | {
      /**
       * `low` is refused first (at half the queue cap, or as soon as the oldest waiter has
       * waited past `target`); `high` only when the queue is at its cap. Default `normal`.
       */
      priority?: Priority
    }

/** Process pressure through @fastify/under-pressure; a threshold of 0 turns its check off. */
export interface ProcessPressureOptions {
  /** Mean event-loop delay (ms) over one sample above which requests are refused. Default 1000. */
  maxEventLoopDelay?: number
  /** Event-loop utilisation (0..1) above which requests are refused. Default 0 (off). */
  maxEventLoopUtilization?: number
  /** `heapUsed` bytes above which requests are refused. Default 0 (off). */
  maxHeapUsedBytes?: number
  /** RSS bytes above which requests are refused. Default 0 (off). */
  maxRssBytes?: number
  /** How often the process is sampled, ms (at least 50). Default 1000. */
  sampleInterval?: number
}

export interface PgPoolBackpressureOptions {
  /**
   * Queueing delay (ms) the pool may keep standing. When every request that got a connection
   * for one `interval` waited longer than this, the pool is overloaded, and requests expected
   * to wait longer than this are refused. Default 40.
   */
  target?: number
  /** How long (ms) waits must stay above `target` before the pool counts as overloaded. Default 100. */
  interval?: number
  /**
   * Expected wait (ms) above which a request is refused even before the queue counts as
   * standing: the largest burst absorbed, in queued work. At least `target`. Default 60.
   */
  maxDelay?: number
  /**
   * Retry storms: while refusals arrive more than `factor` times faster than the pool drains,
   * each refusal is answered after `delay` ms. `false` answers every refusal at once.
   * Default `{ factor: 10, delay: 500 }`.
   */
  retryStorm?: { factor?: number; delay?: number } | false
  /** Bounds (whole seconds) of the computed Retry-After. Default `{ min: 1, max: 30 }`. */
  retryAfter?: { min?: number; max?: number }
  /**
   * Route prefixes never refused (besides routes with `config.db: false` or
   * `config.backpressure: false`). Default `['/health', '/metrics']`.
   */
  exempt?: readonly string[]
  /** Event-loop and memory pressure; `false` does not register @fastify/under-pressure. */
  process?: ProcessPressureOptions | false
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

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value)
  return Array.isArray(value) ? 'an array' : typeof value
}

function number(name: string, raw: unknown, fallback: number, check: (n: number) => boolean, rule: string): number {
  if (raw === undefined) return fallback
  if (typeof raw !== 'number' || !Number.isFinite(raw) || !check(raw)) {
    throw invalidOption(name, `expected ${rule}, got ${describe(raw)}`)
  }
  return raw
}

function object(name: string, raw: unknown): Record<string, unknown> {
  if (raw === undefined) return {}
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw invalidOption(name, `expected an object, got ${describe(raw)}`)
  }
  return raw as Record<string, unknown>
}

function onlyKeys(name: string, given: Record<string, unknown>, known: readonly string[]): void {
  for (const key of Object.keys(given)) {
    if (!known.includes(key)) throw invalidOption(`${name}.${key}`, 'unknown option')
  }
}

const positive = (n: number) => n > 0
const nonNegative = (n: number) => n >= 0
const wholeSeconds = (n: number) => Number.isInteger(n) && n >= 1

function resolveProcess(raw: unknown): ResolvedProcessOptions | false {
  if (raw === false) return false
  const given = object('backpressure.process', raw)
  onlyKeys('backpressure.process', given, [
    'maxEventLoopDelay',
    'maxEventLoopUtilization',
    'maxHeapUsedBytes',
    'maxRssBytes',
    'sampleInterval',
  ])
  const name = (key: string) => `backpressure.process.${key}`
  return Object.freeze({
    maxEventLoopDelay: number(name('maxEventLoopDelay'), given.maxEventLoopDelay, 1000, nonNegative, 'a number >= 0'),
    maxEventLoopUtilization: number(
      name('maxEventLoopUtilization'),
      given.maxEventLoopUtilization,
      0,
      (n) => n >= 0 && n <= 1,
      'a number from 0 to 1',
    ),
    maxHeapUsedBytes: number(name('maxHeapUsedBytes'), given.maxHeapUsedBytes, 0, nonNegative, 'a number >= 0'),
    maxRssBytes: number(name('maxRssBytes'), given.maxRssBytes, 0, nonNegative, 'a number >= 0'),
    sampleInterval: number(
      name('sampleInterval'),
      given.sampleInterval,
      1000,
      // under-pressure samples the loop every 10 ms and reads a window without a sample as an
      // infinite delay: a shorter interval would refuse requests on an idle process.
      (n) => Number.isInteger(n) && n >= 50,
      'an integer >= 50',
    ),
  })
}

/** Validates the plugin options once, at register; throws FST_PG_POOL_INVALID_OPTION. */
export function resolveOptions(raw: unknown): ResolvedBackpressureOptions {
  const given = object('backpressure', raw)
  onlyKeys('backpressure', given, ['target', 'interval', 'maxDelay', 'retryStorm', 'retryAfter', 'exempt', 'process'])
  const target = number('backpressure.target', given.target, 40, positive, 'a number > 0')
  const interval = number('backpressure.interval', given.interval, 100, positive, 'a number > 0')
  const maxDelay = number('backpressure.maxDelay', given.maxDelay, Math.max(60, target), positive, 'a number > 0')
  if (maxDelay < target) {
    throw invalidOption('backpressure.maxDelay', `expected at least target (${target}), got ${maxDelay}`)
  }
  let retryStorm: ResolvedBackpressureOptions['retryStorm'] = false
  if (given.retryStorm !== false) {
    const storm = object('backpressure.retryStorm', given.retryStorm)
    onlyKeys('backpressure.retryStorm', storm, ['factor', 'delay'])
    retryStorm = Object.freeze({
      factor: number('backpressure.retryStorm.factor', storm.factor, 10, positive, 'a number > 0'),
      delay: number('backpressure.retryStorm.delay', storm.delay, 500, nonNegative, 'a number >= 0'),
    })
  }
  const retry = object('backpressure.retryAfter', given.retryAfter)
  onlyKeys('backpressure.retryAfter', retry, ['min', 'max'])
  const min = number('backpressure.retryAfter.min', retry.min, 1, wholeSeconds, 'an integer >= 1')
  const max = number('backpressure.retryAfter.max', retry.max, Math.max(30, min), wholeSeconds, 'an integer >= 1')
  if (max < min) throw invalidOption('backpressure.retryAfter.max', `expected at least min (${min}), got ${max}`)
  const exempt = given.exempt ?? ['/health', '/metrics']
  if (!Array.isArray(exempt) || exempt.some((prefix) => typeof prefix !== 'string' || !prefix.startsWith('/'))) {
    throw invalidOption('backpressure.exempt', `expected an array of paths starting with /, got ${describe(exempt)}`)
  }
  return Object.freeze({
    target,
    interval,
    maxDelay,
    retryStorm,
    retryAfter: Object.freeze({ min, max }),
    exempt: Object.freeze(exempt.map((prefix: string) => (prefix.length > 1 ? prefix.replace(/\/+$/, '') : prefix))),
    process: resolveProcess(given.process),
  })
}

/** The priority of a route, or null when it is never refused; throws on a bad `config.backpressure`. */
export function routePriority(
  url: string | undefined,
  config: { db?: unknown; backpressure?: unknown } | undefined,
  exempt: readonly string[],
): Priority | null {
  // No route (404) and routes that never use the database do not load the pool.
  if (url === undefined || config?.db === false) return null
  const route = config?.backpressure
  if (route === false) return null
  for (const prefix of exempt) {
    if (prefix === '/' || url === prefix || url.startsWith(`${prefix}/`)) return null
  }
  if (route === undefined) return 'normal'
  if (route === null || typeof route !== 'object' || Array.isArray(route)) {
    throw invalidOption(`config.backpressure of ${url}`, `expected false or an object, got ${describe(route)}`)
  }
  const { priority = 'normal', ...rest } = route as { priority?: unknown }
  const unknown = Object.keys(rest)[0]
  if (unknown !== undefined) throw invalidOption(`config.backpressure.${unknown} of ${url}`, 'unknown option')
  if (priority !== 'high' && priority !== 'normal' && priority !== 'low') {
    throw invalidOption(
      `config.backpressure.priority of ${url}`,
      `expected high, normal or low, got ${describe(priority)}`,
    )
  }
  return priority
}

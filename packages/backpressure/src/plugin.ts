import { performance } from 'node:perf_hooks'
import underPressure from '@fastify/under-pressure'
import { type Clock, channels, routeInstance, usesDatabase } from '@fastify-pg-pool/core'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { errorBody, errors } from './errors.js'
import {
  type PgPoolBackpressureOptions,
  type Priority,
  type RouteBackpressureConfig,
  resolveOptions,
  routePriority,
} from './options.js'
import { PoolAdmission } from './pool-admission.js'
import { StallClock } from './stall-clock.js'

const CONTENT_TYPE = 'application/json; charset=utf-8'

/** Codes of the core's own 503s that mean "the queue is too long": they get the computed Retry-After. */
const poolCodes = new Set(['FST_PG_POOL_ACQUIRE_TIMEOUT', 'FST_PG_POOL_QUEUE_FULL'])

const processTypes = ['eventLoopDelay', 'eventLoopUtilization', 'heapUsedBytes', 'rssBytes', 'healthCheck'] as const

type TimerHandle = ReturnType<Clock['setTimeout']>

type InvalidOption = InstanceType<(typeof errors)['FST_PG_POOL_INVALID_OPTION']>

/** How admission treats a route: its priority (null: never refused) and the pool it judges it by. */
interface RouteAdmission {
  readonly priority: Priority | null
  /** `config.db.pipeline`: its requests may join a shared connection instead of queueing. */
  readonly pipelined: boolean
  /** The primary pool of the instance the route's `request.db` uses; undefined without one. */
  readonly pool: PoolAdmission | undefined
  /** The body of the 500 its every request gets, when its `config.backpressure` is invalid. */
  readonly invalid: string | undefined
}
const unrouted: RouteAdmission = Object.freeze({
  priority: null,
  pipelined: false,
  pool: undefined,
  invalid: undefined,
})

const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout | undefined),
}

const backpressure: FastifyPluginAsync<PgPoolBackpressureOptions> = async (app, opts) => {
  const options = resolveOptions(opts)
  // The app registered @fastify/under-pressure itself: a second one would fail on its decorators
  // (`memoryUsage`), and which thresholds, exemptions and replies apply is the app's choice, so
  // it is refused here, before anything is attached to the pool.
  if (options.process !== false && app.hasDecorator('memoryUsage')) {
    throw new errors.FST_PG_POOL_INVALID_OPTION(
      'backpressure.process',
      '@fastify/under-pressure is registered on this app already; pass backpressure: { process: false } ' +
        'to keep its process checks (this plugin then does admission control only), or remove it to let ' +
        'this plugin register it',
    )
  }
  const clock = systemClock
  // Stalls are the process's: one clock for every pool, running while any of them has work.
  const pools: PoolAdmission[] = []
  const anyBusy = (): boolean => {
    for (const pool of pools) if (pool.busy()) return true
    return false
  }
  const stalls = new StallClock(clock, anyBusy)
  app.addHook('onClose', (_app, done) => {
    stalls.stop()
    for (const pool of pools) pool.stop()
    done()
  })
  /**
   * The admission of an instance's primary pool, created when a route first needs it (an
   * instance registered after this plugin is found then); undefined for an unknown instance,
   * whose requests are admitted for the core to refuse with its own coded error.
   */
  const poolAdmission = (instance: string | undefined): PoolAdmission | undefined => {
    const view = app.pgPools.get(instance)
    if (view === undefined) return undefined
    let pool = pools.find((known) => known.view === view)
    if (pool === undefined) {
      pool = new PoolAdmission(view, options, clock, stalls)
      pools.push(pool)
    }
    return pool
  }

  // The default instance's pool is watched from now on (its hold times before the first request
  // count); the others from the first request of a route that uses them.
  poolAdmission(undefined)

  const processBodies = new Map<string, string>(
    processTypes.map((type) => [type, errorBody(new errors.FST_PG_POOL_PROCESS_PRESSURE(type))]),
  )

  // Resolved once per route (its config object), on the first request: routes added before
  // this plugin (health, metrics) are never seen by onRoute, and Fastify lists them nowhere.
  const routes = new WeakMap<object, RouteAdmission>()
  const judge = (request: FastifyRequest): RouteAdmission => {
    const { url, config } = request.routeOptions as { url: string | undefined; config: { db?: unknown } }
    let priority: Priority | null
    try {
      priority = routePriority(url, config, options.exempt)
    } catch (error) {
      // A route added before the plugin, with a bad config.backpressure: said once, loudly, and
      // every request to it answered with the coded error (a throw here would be logged per request).
      request.log.error({ err: error }, `every request to ${url} is answered 500: its config.backpressure is invalid`)
      return Object.freeze({
        priority: null,
        pipelined: false,
        pool: undefined,
        invalid: errorBody(error as InvalidOption),
      })
    }
    const pool = url === undefined || !usesDatabase(config) ? undefined : poolAdmission(routeInstance(config))
    const pipelined = (config.db as { pipeline?: unknown } | undefined)?.pipeline === true
    return Object.freeze({ priority, pipelined, pool, invalid: undefined })
  }
  const routeOf = (request: FastifyRequest): RouteAdmission => {
    const config = request.routeOptions.config as object | undefined
    if (config === undefined) return unrouted
    let judged = routes.get(config)
    if (judged === undefined) {
      judged = judge(request)
      routes.set(config, judged)
    }
    return judged
  }
  // Routes added after the plugin are checked as they are added: a bad config.backpressure throws.
  app.addHook('onRoute', (route) => {
    routePriority(route.url, route.config, options.exempt)
  })

  const refuse = (reply: FastifyReply, body: string, retryAfter: number) =>
    reply.code(503).header('retry-after', String(retryAfter)).header('content-type', CONTENT_TYPE).send(body)

  // Refusals held back during a retry storm are answered at once when the app closes.
  const held = new Map<TimerHandle, () => void>()
  app.addHook('preClose', (done) => {
    for (const [timer, answer] of held) {
      clock.clearTimeout(timer)
      answer()
    }
    held.clear()
    done()
  })

  const admit: onRequestHookHandler = (request, reply, done) => {
    const { priority, pipelined, pool, invalid } = routeOf(request)
    if (invalid !== undefined) return reply.code(500).header('content-type', CONTENT_TYPE).send(invalid)
    if (priority === null || pool === undefined) return done()
    const { admission } = pool
    const refusal = admission.check(priority, pipelined)
    if (refusal === undefined) return done()
    // Observers (metrics, tracing) count refusals from the channel: nothing is written to the core.
    if (channels.refusal.hasSubscribers) {
      channels.refusal.publish({
        pool: pool.view,
        route: request.routeOptions.url ?? 'unknown',
        reason: refusal,
        request,
      })
    }
    const body = pool.bodies[refusal]
    // Jittered during a retry storm (admission.ts, HOLD_JITTER).
    const delay = admission.refusalDelay()
    const retryAfter = admission.retryAfter()
    if (delay === 0) return refuse(reply, body, retryAfter)
    const timer = clock.setTimeout(() => {
      held.delete(timer)
      refuse(reply, body, retryAfter)
    }, delay)
    held.set(timer, () => refuse(reply, body, retryAfter))
  }
  app.addHook('onRequest', admit)

  // A request admitted earlier that then timed out in the queue, or met a full queue, gets the
  // same Retry-After as a refusal at the door (the core's own value is a constant).
  app.addHook('onError', (request, reply, error, done) => {
    const code = (error as { code?: unknown }).code
    const pool = routeOf(request).pool
    if (pool !== undefined && typeof code === 'string' && poolCodes.has(code)) {
      // The core's errors carry their own Retry-After (error.headers, which Fastify's error
      // handler applies after this hook): the computed one replaces it there.
      const seconds = String(pool.admission.retryAfter())
      const headers = (error as { headers?: Record<string, string> }).headers
      if (headers !== undefined) headers['retry-after'] = seconds
      else reply.header('retry-after', seconds)
    }
    done()
  })

  const processOptions = options.process
  if (processOptions !== false) {
    const { min, max } = options.retryAfter
    // The signal is re-sampled every sampleInterval: retrying sooner cannot see a change.
    const processRetryAfter = String(Math.min(max, Math.max(min, Math.ceil(processOptions.sampleInterval / 1000))))
    await app.register(underPressure, {
      ...processOptions,
      // Utilisation since the previous sample, as every other signal: under-pressure's default
      // ('cumulative') averages it since registration, so a busy stretch kept an idle process
      // refused for as long again, and a late overload never showed.
      eventLoopUtilizationMode: 'interval',
      // Called for every request while a threshold is exceeded. Returning nothing lets the
      // request through (exempt routes); a returned body is sent as the reply.
      pressureHandler: (request: FastifyRequest, reply: FastifyReply, type: string) => {
        const { priority, pool } = routeOf(request)
        if (priority === null) return undefined
        if (pool !== undefined && channels.refusal.hasSubscribers) {
          const route = request.routeOptions.url ?? 'unknown'
          channels.refusal.publish({ pool: pool.view, route, reason: 'process', request })
        }
        reply.code(503).header('retry-after', processRetryAfter).header('content-type', CONTENT_TYPE)
        return processBodies.get(type) ?? processBodies.get('healthCheck')
      },
    } as Parameters<typeof underPressure>[1])
  }
}

/**
 * Admission control for routes that use the database: refuses with 503 + Retry-After, before
 * the body is parsed, when the pool's queue is at its cap or its queueing delay stands above
 * `target`; and process pressure through @fastify/under-pressure, with the same exemptions.
 */
export const pgPoolBackpressure = fp(backpressure, {
  name: '@fastify-pg-pool/backpressure',
  fastify: '5.x',
  dependencies: ['@fastify-pg-pool/core'],
})

declare module 'fastify' {
  interface FastifyContextConfig {
    /** `false`: never refused by admission control or process pressure. */
    backpressure?: RouteBackpressureConfig | undefined
  }
}

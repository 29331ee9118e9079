import { performance } from 'node:perf_hooks'
import underPressure from '@fastify/under-pressure'
import { type Clock, channels } from '@fastify-pg-pool/core'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { Admission, type PoolRefusal } from './admission.js'
import { errors, refusalBody } from './errors.js'
import {
  type PgPoolBackpressureOptions,
  type Priority,
  type RouteBackpressureConfig,
  resolveOptions,
  routePriority,
} from './options.js'
import { StallClock } from './stall-clock.js'

const CONTENT_TYPE = 'application/json; charset=utf-8'

/** Codes of the core's own 503s that mean "the queue is too long": they get the computed Retry-After. */
const poolCodes = new Set(['FST_PG_POOL_ACQUIRE_TIMEOUT', 'FST_PG_POOL_QUEUE_FULL'])

const processTypes = ['eventLoopDelay', 'eventLoopUtilization', 'heapUsedBytes', 'rssBytes', 'healthCheck'] as const

type TimerHandle = ReturnType<Clock['setTimeout']>

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
  const view = app.pgPool
  const clock = systemClock
  const admission = new Admission(view, options, clock)
  const stalls = new StallClock(clock, () => {
    const stats = view.stats()
    return stats.leased > 0 || stats.waiting > 0
  })
  const onAcquire = (waitMs: number) => {
    stalls.wake()
    admission.onAcquire(waitMs)
  }
  const onRelease = (heldMs: number) => {
    const now = clock.now()
    admission.onRelease(heldMs, stalls.within(now - heldMs, now))
  }
  view.on('acquire', onAcquire)
  view.on('release', onRelease)
  app.addHook('onClose', (_app, done) => {
    stalls.stop()
    view.off('acquire', onAcquire)
    view.off('release', onRelease)
    done()
  })

  const bodies: Record<PoolRefusal, string> = {
    queue_full: refusalBody(new errors.FST_PG_POOL_QUEUE_FULL(view.options.maxWaiting)),
    queue_delay: refusalBody(new errors.FST_PG_POOL_OVERLOADED(options.target)),
  }
  const processBodies = new Map<string, string>(
    processTypes.map((type) => [type, refusalBody(new errors.FST_PG_POOL_PROCESS_PRESSURE(type))]),
  )

  // Resolved once per route (its config object), on the first request: routes registered
  // before this plugin (health, metrics) are never seen by onRoute.
  const priorities = new WeakMap<object, Priority | null>()
  const priorityOf = (request: FastifyRequest): Priority | null => {
    const route = request.routeOptions
    const config = route.config as { db?: unknown; backpressure?: unknown } | undefined
    if (config === undefined) return null
    let priority = priorities.get(config)
    if (priority === undefined) {
      priority = routePriority(route.url, config, options.exempt)
      priorities.set(config, priority)
    }
    return priority
  }
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
    const priority = priorityOf(request)
    if (priority === null) return done()
    const refusal = admission.check(priority)
    if (refusal === undefined) return done()
    // Observers (metrics, tracing) count refusals from the channel: nothing is written to the core.
    if (channels.refusal.hasSubscribers) {
      channels.refusal.publish({ pool: view, route: request.routeOptions.url ?? 'unknown', reason: refusal, request })
    }
    // Jittered during a retry storm (admission.ts, HOLD_JITTER).
    const delay = admission.refusalDelay()
    const retryAfter = admission.retryAfter()
    if (delay === 0) return refuse(reply, bodies[refusal], retryAfter)
    const timer = clock.setTimeout(() => {
      held.delete(timer)
      refuse(reply, bodies[refusal], retryAfter)
    }, delay)
    held.set(timer, () => refuse(reply, bodies[refusal], retryAfter))
  }
  app.addHook('onRequest', admit)

  // A request admitted earlier that then timed out in the queue, or met a full queue, gets the
  // same Retry-After as a refusal at the door (the core's own value is a constant).
  app.addHook('onError', (_request, reply, error, done) => {
    const code = (error as { code?: unknown }).code
    if (typeof code === 'string' && poolCodes.has(code)) {
      // The core's errors carry their own Retry-After (error.headers, which Fastify's error
      // handler applies after this hook): the computed one replaces it there.
      const seconds = String(admission.retryAfter())
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
      // Called for every request while a threshold is exceeded. Returning nothing lets the
      // request through (exempt routes); a returned body is sent as the reply.
      pressureHandler: (request: FastifyRequest, reply: FastifyReply, type: string) => {
        if (priorityOf(request) === null) return undefined
        if (channels.refusal.hasSubscribers) {
          const route = request.routeOptions.url ?? 'unknown'
          channels.refusal.publish({ pool: view, route, reason: 'process', request })
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
    backpressure?: RouteBackpressureConfig
  }
}

import type { ServerResponse } from 'node:http'
import { hangUp } from '@fastify-pg-pool/core'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { BoundedLabel } from './bounded-label.js'
import { FastHistogram, type HistogramSeries } from './fast-histogram.js'
import type { ResolvedMetricsOptions } from './options.js'

const kStart = Symbol('fastify-pg-pool.metrics.start')
type TimedRequest = FastifyRequest & { [kStart]: number }
/** On the raw response: the request it answers (its early close is a hang-up). */
const kTimed = Symbol('fastify-pg-pool.metrics.request')
/** On the raw request: when the server took it, before any onRequest hook ran. */
const kArrived = Symbol('fastify-pg-pool.metrics.arrived')
type StampedMessage = { [kArrived]?: number }
/**
 * In the scrape route's config: its requests are not counted. Its URL is not the `path` option
 * when Fastify prefixes it (the plugin registered inside a prefixed plugin).
 */
export const kScrapeRoute = Symbol('fastify-pg-pool.metrics.scrape')

const methods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])
const statusClasses = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const

function classOf(statusCode: number): string {
  return statusClasses[Math.floor(statusCode / 100) - 1] ?? 'other'
}

/** Route label of requests no route matched: one value for every unknown URL. */
export const UNMATCHED_ROUTE = 'unmatched'

/**
 * The HTTP request duration histogram. Aborted requests are observed with status class `aborted`
 * (in `onRequestAbort`, or when the response closes unfinished): Fastify never runs `onResponse`
 * for them.
 */
export function registerHttpMetrics(app: FastifyInstance, options: ResolvedMetricsOptions, routes: BoundedLabel): void {
  const histogram = new FastHistogram({
    name: `${options.namePrefix}http_request_duration_seconds`,
    help: 'HTTP request duration by method, route template (unmatched for unknown URLs) and status class (aborted when the client hung up first)',
    labelNames: ['method', 'route', 'status_class'],
    buckets: options.buckets.http,
    registers: [options.registry],
  })
  // method → route template → status class → series: no string built per request.
  const byMethod = new Map<string, Map<string | undefined, Map<string, HistogramSeries>>>()
  const seriesOf = (rawMethod: string, url: string | undefined, statusClass: string) => {
    const method = methods.has(rawMethod) ? rawMethod : 'other'
    let byRoute = byMethod.get(method)
    if (byRoute === undefined) {
      byRoute = new Map()
      byMethod.set(method, byRoute)
    }
    let byStatus = byRoute.get(url)
    if (byStatus === undefined) {
      byStatus = new Map()
      byRoute.set(url, byStatus)
    }
    let series = byStatus.get(statusClass)
    if (series === undefined) {
      const route = url === undefined ? UNMATCHED_ROUTE : routes.value(url)
      series = histogram.series({ method, route, status_class: statusClass })
      byStatus.set(statusClass, series)
    }
    return series
  }

  /**
   * `elapsedMs`: Fastify's own timing of the reply, for a request our onRequest hook never saw
   * (an earlier onRequest hook answered it: admission control, under-pressure, authentication).
   */
  const observe = (request: FastifyRequest, statusClass: string, elapsedMs?: number) => {
    const timed = request as TimedRequest
    const start = timed[kStart]
    if (start < 0 || (start === 0 && elapsedMs === undefined)) return
    timed[kStart] = -1
    if ((request.routeOptions.config as { [kScrapeRoute]?: true } | undefined)?.[kScrapeRoute] === true) return
    const url = request.routeOptions.url
    const ms = start === 0 ? (elapsedMs as number) : performance.now() - start
    seriesOf(request.method, url, statusClass).observe(ms / 1000)
  }

  /**
   * The raw response closed (core's watchClose: on every request, since Fastify runs neither
   * onResponse nor onRequestAbort for a hang-up once the request's body was read): cut before it
   * was ended, the client hung up.
   */
  function responseClosed(this: ServerResponse & { [kTimed]?: FastifyRequest }): void {
    const request = this[kTimed]
    if (request !== undefined && hangUp.hungUp(this)) observe(request, 'aborted')
  }

  app.decorateRequest(kStart, 0)
  app.addHook('onRequest', (request, reply, done) => {
    // Observed already: the client hung up while an earlier onRequest hook ran.
    if ((request as TimedRequest)[kStart] < 0) return done()
    ;(request as TimedRequest)[kStart] = performance.now()
    const response = reply.raw as ServerResponse & { [kTimed]?: FastifyRequest }
    response[kTimed] = request
    hangUp.watchClose(response, request.raw.socket, responseClosed)
    done()
  })
  app.addHook('onResponse', (request, reply, done) => {
    // Node's HTTP/2 layer runs it for a stream the client reset too.
    observe(request, hangUp.hungUp(reply.raw) ? 'aborted' : classOf(reply.statusCode), reply.elapsedTime)
    done()
  })
  // A client that hangs up while an earlier onRequest hook runs (authentication, a held
  // refusal): our onRequest hook never ran, and Fastify gives onRequestAbort no reply to time it
  // by. The server's own 'request' event, ahead of Fastify's handler, stamps its arrival.
  const stamp = (raw: StampedMessage) => {
    raw[kArrived] = performance.now()
  }
  app.server.prependListener('request', stamp)
  app.addHook('onClose', (_app, done) => {
    app.server.removeListener('request', stamp)
    done()
  })
  app.addHook('onRequestAbort', (request, done) => {
    const arrived = (request.raw as StampedMessage)[kArrived]
    observe(request, 'aborted', arrived === undefined ? undefined : performance.now() - arrived)
    done()
  })
}

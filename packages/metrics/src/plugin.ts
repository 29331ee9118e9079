import { withoutDatabase } from '@fastify-pg-pool/core'
import type { FastifyContextConfig, FastifyPluginAsync, RouteShorthandOptions } from 'fastify'
import fp from 'fastify-plugin'
import type { Registry } from 'prom-client'
import { BoundedLabel } from './bounded-label.js'
import { errors } from './errors.js'
import { type Scrape, scrape } from './exposition.js'
import { kScrapeRoute, registerHttpMetrics } from './http-metrics.js'
import { type PgPoolMetricsOptions, resolveMetricsOptions } from './options.js'
import { registerPoolMetrics } from './pool-metrics.js'
import { defaultProcessMetrics } from './process-metrics.js'

/** `app.pgPoolMetrics`: the registry and its rendering, for serving metrics elsewhere. */
export interface PgPoolMetricsView {
  readonly registry: Registry
  /** Renders the registry in the format the Accept header asks for. */
  scrape(accept?: string): Promise<Scrape>
}

declare module 'fastify' {
  interface FastifyInstance {
    pgPoolMetrics: PgPoolMetricsView
  }
}

const metrics: FastifyPluginAsync<PgPoolMetricsOptions> = async (app, opts) => {
  const options = resolveMetricsOptions(opts)
  const { registry } = options
  const before = new Set(registry.getMetricsAsArray().map((metric) => metric.name))
  const added = () =>
    registry
      .getMetricsAsArray()
      .map((metric) => metric.name)
      .filter((name) => !before.has(name))
  const routes = new BoundedLabel(options.maxRoutes)

  let detach = () => {}
  try {
    const pools = registerPoolMetrics(options, routes)
    // Every pool of every instance, and those registered after this plugin (a named instance).
    for (const view of app.pgPools.all()) pools.add(view)
    const unsubscribe = app.pgPools.onAdd((view) => pools.add(view))
    detach = () => {
      unsubscribe()
      pools.detach()
    }
    if (options.httpMetrics) registerHttpMetrics(app, options, routes)
    // Standard names (process_*, nodejs_*), as Node.js dashboards expect them; the process's own.
    // The same metric objects in every registry: one given them already is a duplicate still.
    for (const { name, metric } of options.defaultMetrics ? defaultProcessMetrics() : []) {
      if (registry.getSingleMetric(name) !== undefined) throw new errors.FST_PG_POOL_METRICS_DUPLICATE(name)
      registry.registerMetric(metric)
    }
  } catch (error) {
    // Leave a registry we were given as we found it.
    detach()
    for (const name of added()) registry.removeSingleMetric(name)
    const message = error instanceof Error ? error.message : String(error)
    const duplicate = /A metric with the name (\S+) has already been registered/.exec(message)
    if (duplicate) throw new errors.FST_PG_POOL_METRICS_DUPLICATE(duplicate[1])
    throw error
  }
  const ours = added()

  app.decorate(
    'pgPoolMetrics',
    Object.freeze({
      registry,
      scrape: (accept?: string) => scrape(registry, accept),
    } satisfies PgPoolMetricsView),
  )

  // An injected registry outlives the app: take our metrics out so the next app can register.
  // Once every pool has ended (after this plugin's own onClose would run: Fastify runs onClose
  // hooks in reverse order of registration), so that a transaction cut at close is counted.
  app.pgPools.onClosed(() => {
    detach()
    for (const name of ours) registry.removeSingleMetric(name)
  })

  if (options.path !== false) {
    // A route free of database plumbing: the pool and admission control leave it alone, and
    // @fastify/under-pressure (when an app registers it on its own) lets through a route whose
    // pressureHandler returns nothing: scrapes go on while the process is under pressure.
    const config = withoutDatabase({ pressureHandler: () => undefined, [kScrapeRoute]: true }) as FastifyContextConfig
    const routeOptions: RouteShorthandOptions = { config, logLevel: 'warn' }
    if (options.onRequest.length > 0)
      routeOptions.onRequest = options.onRequest as NonNullable<RouteShorthandOptions['onRequest']>
    app.get(options.path, routeOptions, async (request, reply) => {
      const { contentType, body } = await scrape(registry, request.headers.accept)
      return reply.type(contentType).send(body)
    })
  }
}

/** Prometheus metrics of the pool (and of HTTP requests) on `/metrics`. */
export const pgPoolMetrics = fp(metrics, {
  name: '@fastify-pg-pool/metrics',
  fastify: '5.x',
  dependencies: ['@fastify-pg-pool/core'],
})

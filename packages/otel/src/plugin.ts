import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { instrument } from './instrument-pools.js'
import { defaultPools, type PgPoolOtelOptions, resolveOtelOptions } from './options.js'

/** `app.pgPoolOtel`: what the plugin found and set up at register. */
export interface PgPoolOtelView {
  /** Spans are made (traces on, and an SDK's tracer provider registered). */
  readonly tracing: boolean
  /** Metrics are recorded (metrics on, and an SDK's meter provider registered). */
  readonly metrics: boolean
  /** `db.client.connection.pool.name` of each instrumented pool. */
  readonly poolNames: readonly string[]
}

declare module 'fastify' {
  interface FastifyInstance {
    pgPoolOtel: PgPoolOtelView
  }
}

const otel: FastifyPluginAsync<PgPoolOtelOptions> = async (app, opts) => {
  const options = resolveOtelOptions(opts)
  const instrumentation = instrument(options.pools(app), options)
  // By default, pools registered after this plugin (a named instance) are instrumented too.
  const unsubscribe = options.pools === defaultPools ? app.pgPools.onAdd((view) => instrumentation.add(view)) : () => {}
  app.decorate(
    'pgPoolOtel',
    Object.freeze({
      tracing: instrumentation.tracing,
      metrics: instrumentation.metrics,
      get poolNames() {
        return instrumentation.poolNames
      },
    } satisfies PgPoolOtelView),
  )
  // Once every pool has ended (a transaction cut at close answers its ROLLBACK after this plugin's
  // own onClose would run: Fastify runs onClose hooks in reverse order of registration).
  app.pgPools.onClosed(() => {
    unsubscribe()
    instrumentation.close()
  })
}

/** OpenTelemetry spans and metrics of the pool, through @opentelemetry/api. */
export const pgPoolOtel = fp(otel, {
  name: '@fastify-pg-pool/otel',
  fastify: '5.x',
  dependencies: ['@fastify-pg-pool/core'],
})

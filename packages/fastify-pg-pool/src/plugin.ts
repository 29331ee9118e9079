import pgPoolBackpressure, { type PgPoolBackpressureOptions } from '@fastify-pg-pool/backpressure'
import pgPoolCore, { type PgPoolCoreOptions } from '@fastify-pg-pool/core'
import pgPoolHealth, { type PgPoolHealthOptions } from '@fastify-pg-pool/health'
import pgPoolMetrics, { type PgPoolMetricsOptions } from '@fastify-pg-pool/metrics'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'

export interface PgPoolOptions extends PgPoolCoreOptions {
  /** `/health/live`, `/health/ready`, `/health`; false disables them. */
  health?: PgPoolHealthOptions | false
  /** `/metrics`; false disables it. */
  metrics?: PgPoolMetricsOptions | false
  /** Admission control and process pressure; false disables it. */
  backpressure?: PgPoolBackpressureOptions | false
}

const plugin: FastifyPluginAsync<PgPoolOptions> = async (app, opts) => {
  const { health = {}, metrics = {}, backpressure = {}, ...core } = opts
  await app.register(pgPoolCore, core)
  if (metrics !== false) await app.register(pgPoolMetrics, metrics)
  if (health !== false) await app.register(pgPoolHealth, health)
  if (backpressure !== false) await app.register(pgPoolBackpressure, backpressure)
}

/** Core pool, health routes, metrics and admission control in one registration. */
export const pgPool = fp(plugin, { name: 'fastify-pg-pool', fastify: '5.x' })

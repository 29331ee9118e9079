import pgPoolBackpressure, { type PgPoolBackpressureOptions } from '@fastify-pg-pool/backpressure'
import pgPoolCore, { optionKit, type PgPoolCoreOptions } from '@fastify-pg-pool/core'
import pgPoolHealth, { type PgPoolHealthOptions } from '@fastify-pg-pool/health'
import pgPoolMetrics, { type PgPoolMetricsOptions } from '@fastify-pg-pool/metrics'
import type { FastifyPluginAsync, RegisterOptions } from 'fastify'
import fp from 'fastify-plugin'

const { asFeature, checkKeys, coreOptionAliases, coreOptionKeys, fastifyRegisterKeys } = optionKit

export interface PgPoolOptions extends PgPoolCoreOptions {
  /** `/health/live`, `/health/ready`, `/health`; false disables them. */
  health?: PgPoolHealthOptions | false
  /** `/metrics`; false disables it. */
  metrics?: PgPoolMetricsOptions | false
  /** Admission control and process pressure; false disables it. */
  backpressure?: PgPoolBackpressureOptions | false
}

/** The umbrella's keys and the core's: a typo among them is refused with the key meant. */
const knownKeys: readonly string[] = [...coreOptionKeys, 'health', 'metrics', 'backpressure']

const plugin: FastifyPluginAsync<PgPoolOptions> = async (app, opts) => {
  checkKeys('', opts, knownKeys, { ignore: fastifyRegisterKeys, aliases: coreOptionAliases })
  const { health, metrics, backpressure, ...rest } = opts as PgPoolOptions & RegisterOptions
  const { prefix, logLevel, logSerializers: _, ...core } = rest
  const parts = {
    health: asFeature('health', health),
    metrics: asFeature('metrics', metrics),
    backpressure: asFeature('backpressure', backpressure),
  }
  // Fastify's prefix and logLevel, given to the umbrella, apply to the routes it declares: the
  // health and metrics routes (each part's own options win).
  const routeDefaults = { ...(prefix === undefined ? {} : { prefix }) }
  await app.register(pgPoolCore, core)
  if (parts.metrics !== false) await app.register(pgPoolMetrics, { ...routeDefaults, ...parts.metrics })
  if (parts.health !== false) {
    await app.register(pgPoolHealth, {
      ...routeDefaults,
      ...(logLevel === undefined ? {} : { logLevel }),
      ...parts.health,
    })
  }
  if (parts.backpressure !== false) await app.register(pgPoolBackpressure, parts.backpressure)
}

/** Core pool, health routes, metrics and admission control in one registration. */
export const pgPool = fp(plugin, { name: 'fastify-pg-pool', fastify: '5.x' })

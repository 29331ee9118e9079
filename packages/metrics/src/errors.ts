import createError, { type FastifyErrorConstructor } from '@fastify/error'

/** Every error the metrics plugin raises; each code is documented in the README (a test checks). */
export const errors = {
  FST_PG_POOL_METRICS_INVALID_OPTION: createError(
    'FST_PG_POOL_METRICS_INVALID_OPTION',
    'Invalid metrics option %s: %s',
    500,
  ),
  FST_PG_POOL_METRICS_DUPLICATE: createError(
    'FST_PG_POOL_METRICS_DUPLICATE',
    'The registry already holds a metric named %s (apps sharing a registry need different prefixes, and only one may enable defaultMetrics)',
    500,
  ),
} as const satisfies Record<string, FastifyErrorConstructor>

export type PgPoolMetricsErrorCode = keyof typeof errors

export function invalidOption(name: string, problem: string): Error {
  return new errors.FST_PG_POOL_METRICS_INVALID_OPTION(name, problem)
}

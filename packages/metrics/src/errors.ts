import { createError, type FastifyErrorConstructor } from '@fastify/error'
import { errors as coreErrors } from '@fastify-pg-pool/core'

/**
 * Every error the metrics plugin raises; each code is documented in the README (a test checks).
 * Bad options reuse the core's `FST_PG_POOL_INVALID_OPTION`, named `metrics.<option>`: one
 * vocabulary for the whole suite.
 */
export const errors = {
  FST_PG_POOL_INVALID_OPTION: coreErrors.FST_PG_POOL_INVALID_OPTION,
  FST_PG_POOL_METRICS_DUPLICATE: createError(
    'FST_PG_POOL_METRICS_DUPLICATE',
    'The registry already holds a metric named %s (apps sharing a registry need different name prefixes, and only one may enable defaultMetrics)',
    500,
  ),
} as const satisfies Record<string, FastifyErrorConstructor>

export type PgPoolMetricsErrorCode = keyof typeof errors

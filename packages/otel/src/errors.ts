import { errors as coreErrors } from '@fastify-pg-pool/core'

/**
 * Every error the OpenTelemetry plugin raises; each code is documented in the README (a test
 * checks). Bad options reuse the core's `FST_PG_POOL_INVALID_OPTION`, named `otel.<option>`:
 * one vocabulary for the whole suite. Telemetry itself never throws into a request.
 */
export const errors: { readonly FST_PG_POOL_INVALID_OPTION: typeof coreErrors.FST_PG_POOL_INVALID_OPTION } = {
  FST_PG_POOL_INVALID_OPTION: coreErrors.FST_PG_POOL_INVALID_OPTION,
}

export type PgPoolOtelErrorCode = keyof typeof errors

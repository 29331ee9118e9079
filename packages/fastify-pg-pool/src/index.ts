export {
  type PgPoolBackpressureOptions,
  pgPoolBackpressure,
  type RouteBackpressureConfig,
} from '@fastify-pg-pool/backpressure'
export * from '@fastify-pg-pool/core'
export { type HealthResponse, type PgPoolHealthOptions, pgPoolHealth } from '@fastify-pg-pool/health'
export { type PgPoolMetricsOptions, pgPoolMetrics } from '@fastify-pg-pool/metrics'
// Shadows the core's `errors` and `PgPoolErrorCode` of the line above with the whole suite's.
export { errors, type PgPoolErrorCode } from './errors.js'
export { type PgPoolOptions, type PgPoolOtelPart, pgPool, pgPool as default } from './plugin.js'

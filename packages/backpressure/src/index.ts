export { errors, type PgPoolBackpressureErrorCode } from './errors.js'
export type {
  PgPoolBackpressureOptions,
  Priority,
  ProcessPressureOptions,
  RouteBackpressureConfig,
} from './options.js'
export { pgPoolBackpressure, pgPoolBackpressure as default } from './plugin.js'

export { ATTR, DURATION_BUCKETS, METRIC, REFUSAL_EVENT, SPAN } from './attributes.js'
export { errors, type PgPoolOtelErrorCode } from './errors.js'
export { instrumentPools, type PoolInstrumentation } from './instrument-pools.js'
export type { PgPoolOtelOptions, PoolSelector } from './options.js'
export { type PgPoolOtelView, pgPoolOtel, pgPoolOtel as default } from './plugin.js'
export { defaultPoolName, type PoolNamer } from './pool-identity.js'
export { type QuerySummary, summarizeQuery } from './query-summary.js'
export {
  APPLICATION_NAME_BYTES,
  type ApplicationNameFormat,
  applicationNameFormats,
  defaultApplicationNameFormat,
  type TraceContextOptions,
  traceContextApplicationName,
  traceContextOnLease,
  traceparentOf,
} from './trace-context.js'

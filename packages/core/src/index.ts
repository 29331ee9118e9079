export type { ConnectionBudget } from './connection-budget.js'
export type { CloseReason } from './connection-slot.js'
export {
  type AcquireMessage,
  channelNames,
  channels,
  type QueryMessage,
  type RefusalMessage,
  type TransactionMessage,
  type TransactionOutcome,
} from './diagnostics.js'
export { errors, type PgPoolErrorCode } from './errors.js'
export type { AcquireFailure, PoolEvents, PoolStats } from './lease-pool.js'
export * as optionKit from './option-kit.js'
export type { PoolOptions, ResolvedPoolOptions, SessionReset } from './options.js'
export { pgPoolCorePlugin, pgPoolCorePlugin as default } from './plugin.js'
export type {
  IsolationLevel,
  LeaseDb,
  LeasedDb,
  PgPoolCoreOptions,
  PgPoolView,
  PoolDb,
  RequestDb,
  RouteDbConfig,
  TransactionOptions,
  UnwrapPromiseArray,
} from './types.js'

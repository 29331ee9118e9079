export type { Clock } from './clock.js'
export type { ConnectionBudget } from './connection-budget.js'
export {
  type AcquireMessage,
  channelNames,
  channels,
  type QueryMessage,
  type RefusalMessage,
  type TransactionMessage,
  type TransactionOutcome,
} from './diagnostics.js'
export { DatabaseError, defaultErrorMapping, type ErrorMapping } from './error-mapping.js'
export { errors, type PgPoolErrorCode } from './errors.js'
export * as hangUp from './hang-up.js'
export type { PgPoolRegistry } from './instances.js'
export type { ListenerStats, Listening, Notification, NotificationHandler } from './listener.js'
export * as optionKit from './option-kit.js'
export type {
  ConnectionOptions,
  PoolOptions,
  ReplicaOptions,
  ReplicaTarget,
  ResolvedPoolOptions,
  SessionReset,
} from './options.js'
export { pgPoolCore, pgPoolCore as default } from './plugin.js'
export type { AcquireFailure, PoolEvents, PoolStats } from './pool.js'
export type { ReplicaLag } from './replica-monitor.js'
export type { FallbackReason, MaxLag } from './replica-router.js'
export { routeInstance, usesDatabase, withoutDatabase } from './route-settings.js'
export type { CloseReason } from './server-connection.js'
export type {
  IsolationLevel,
  LeaseDb,
  LeasedDb,
  NamedDbs,
  PgPoolCoreOptions,
  PgPoolInstances,
  PgPoolView,
  PoolDb,
  ReplicaDb,
  ReplicaState,
  RequestDb,
  RouteDbConfig,
  RouteTransactionOptions,
  TransactionOptions,
  UnwrapPromiseArray,
} from './types.js'

export type {
  BudgetCheck,
  ConnectionsCheck,
  HealthCheck,
  HealthChecks,
  HealthResponse,
  HealthStatus,
  ListenerCheck,
  ReplicationLagCheck,
} from './health-report.js'
export type { HealthDetails, PgPoolHealthOptions, RequireDatabase } from './options.js'
export { pgPoolHealth, pgPoolHealth as default } from './plugin.js'

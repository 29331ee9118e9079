import type { ConnectionBudget, PoolStats } from '@fastify-pg-pool/core'
import type { ResolvedHealthOptions } from './options.js'
import type { PingResult } from './ping-cache.js'

/** draft-inadarei-api-health-check: `pass` and `warn` answer 200, `fail` answers 503. */
export type HealthStatus = 'pass' | 'warn' | 'fail'

/** One measurement of a check (draft-inadarei-api-health-check, "checks"). */
export interface HealthCheck {
  readonly componentType: 'datastore' | 'system'
  readonly observedValue: number
  readonly observedUnit: string
  readonly status: HealthStatus
  /** When the value was observed (ISO 8601); for the ping, when it finished. */
  readonly time: string
  /** Why the check is not `pass`: a fixed text and a code, never a server's message. */
  readonly output?: string
}

/** `postgres:connections`: leased connections, with the pool's other counts as extensions. */
export interface ConnectionsCheck extends HealthCheck {
  readonly max: number
  readonly open: number
  readonly idle: number
  readonly waiting: number
  readonly maxWaiting: number
}

/** `postgres:budget`: `max × instances` against the server's connection slots. */
export interface BudgetCheck extends HealthCheck {
  readonly maxConnections: number
  readonly reserved: number
  readonly available: number
  readonly inUse: number
  readonly instances: number
}

export interface HealthChecks {
  readonly 'postgres:responseTime'?: readonly [HealthCheck]
  readonly 'postgres:connections'?: readonly [ConnectionsCheck]
  readonly 'postgres:budget'?: readonly [BudgetCheck]
  readonly uptime?: readonly [HealthCheck]
}

/** An `application/health+json` body. With `details: 'public'` only `status` is present. */
export interface HealthResponse {
  readonly status: HealthStatus
  readonly output?: string
  readonly serviceId?: string
  readonly description?: string
  readonly version?: string
  readonly releaseId?: string
  readonly checks?: HealthChecks
}

const rank: Record<HealthStatus, number> = { pass: 0, warn: 1, fail: 2 }

function worst(statuses: HealthStatus[]): HealthStatus {
  return statuses.reduce<HealthStatus>((a, b) => (rank[b] > rank[a] ? b : a), 'pass')
}

function withOutput<T extends HealthCheck>(check: Omit<T, 'output'>, output: string | undefined): T {
  return (output === undefined ? check : { ...check, output }) as T
}

export function connectionsCheck(stats: PoolStats, options: ResolvedHealthOptions, time: string): ConnectionsCheck {
  // By default, where the core refuses new requests: its queue cap, never below the connections
  // the pool can still open (requests waiting for those wait for no one).
  const failAt = options.failWaiting ?? Math.max(1, stats.waitingCap)
  let status: HealthStatus = 'pass'
  let output: string | undefined
  if (failAt > 0 && stats.waiting >= failAt) {
    status = 'fail'
    output = `pool exhausted: ${stats.waiting} requests waiting for a connection (fail threshold ${failAt})`
  } else if (options.warnWaiting > 0 && stats.waiting >= options.warnWaiting && stats.leased >= stats.max) {
    status = 'warn'
    output = `pool exhausted: all ${stats.max} connections leased, ${stats.waiting} requests waiting`
  }
  return withOutput<ConnectionsCheck>(
    {
      componentType: 'datastore',
      observedValue: stats.leased,
      observedUnit: 'connections',
      status,
      time,
      max: stats.max,
      open: stats.open,
      idle: stats.idle,
      waiting: stats.waiting,
      maxWaiting: stats.maxWaiting,
    },
    output,
  )
}

export function responseTimeCheck(ping: PingResult, options: ResolvedHealthOptions): HealthCheck {
  const ms = Math.round(ping.ms * 10) / 10
  let status: HealthStatus = 'pass'
  let output: string | undefined
  if (!ping.ok) {
    status = 'fail'
    output =
      ping.code === 'FST_PG_POOL_QUERY_TIMEOUT'
        ? `database did not answer within ${options.pingTimeout} ms (${ping.code})`
        : `database unreachable (${ping.code ?? 'error'})`
  } else if (options.pingWarn > 0 && ping.ms >= options.pingWarn) {
    status = 'warn'
    output = `slow database: ping took ${ms} ms (warn threshold ${options.pingWarn} ms)`
  }
  return withOutput<HealthCheck>(
    {
      componentType: 'datastore',
      observedValue: ms,
      observedUnit: 'ms',
      status,
      time: new Date(ping.at).toISOString(),
    },
    output,
  )
}

export function budgetCheck(budget: ConnectionBudget, time: string): BudgetCheck {
  return withOutput<BudgetCheck>(
    {
      componentType: 'datastore',
      observedValue: budget.demand,
      observedUnit: 'connections',
      status: budget.exceeded ? 'warn' : 'pass',
      time,
      maxConnections: budget.maxConnections,
      reserved: budget.reserved,
      available: budget.available,
      inUse: budget.inUse,
      instances: budget.instances,
    },
    budget.exceeded
      ? `pool max x ${budget.instances} instances = ${budget.demand} connections, more than the ${budget.available} the server allows`
      : undefined,
  )
}

export interface ReadinessInput {
  readonly stats: PoolStats
  readonly budget: ConnectionBudget | undefined
  /** undefined while shutting down (no ping then). */
  readonly ping: PingResult | undefined
  /** A ping succeeded before: with `requireDatabase: 'startup'` a failed ping only warns. */
  readonly everPassed: boolean
}

/** The readiness body; `fail` answers 503. */
export function readiness(input: ReadinessInput, options: ResolvedHealthOptions): HealthResponse {
  const time = new Date().toISOString()
  const connections = connectionsCheck(input.stats, options, time)
  const checks: HealthChecks = {}
  const outputs: string[] = []
  const statuses: HealthStatus[] = []
  if (input.ping === undefined) {
    statuses.push('fail')
    outputs.push('shutting down')
  } else {
    const responseTime = responseTimeCheck(input.ping, options)
    Object.assign(checks, { 'postgres:responseTime': [responseTime] })
    statuses.push(
      responseTime.status === 'fail' && options.requireDatabase === 'startup' && input.everPassed
        ? 'warn'
        : responseTime.status,
    )
    if (responseTime.output !== undefined) outputs.push(responseTime.output)
  }
  Object.assign(checks, { 'postgres:connections': [connections] })
  statuses.push(connections.status)
  if (connections.output !== undefined) outputs.push(connections.output)
  if (input.budget !== undefined) {
    const budget = budgetCheck(input.budget, time)
    Object.assign(checks, { 'postgres:budget': [budget] })
    statuses.push(budget.status)
    if (budget.output !== undefined) outputs.push(budget.output)
  }
  const status = worst(statuses)
  return present(status, status === 'pass' ? undefined : outputs.join('; '), checks, options)
}

/** The liveness body: always `pass` while the process answers. */
export function liveness(options: ResolvedHealthOptions): HealthResponse {
  const uptime: HealthCheck = {
    componentType: 'system',
    observedValue: Math.round(process.uptime()),
    observedUnit: 's',
    status: 'pass',
    time: new Date().toISOString(),
  }
  return present('pass', undefined, { uptime: [uptime] }, options)
}

function present(
  status: HealthStatus,
  output: string | undefined,
  checks: HealthChecks,
  options: ResolvedHealthOptions,
): HealthResponse {
  if (options.details === 'public') return { status }
  const { serviceId, description, version, releaseId } = options
  return {
    status,
    ...(output === undefined ? {} : { output }),
    ...(serviceId === undefined ? {} : { serviceId }),
    ...(description === undefined ? {} : { description }),
    ...(version === undefined ? {} : { version }),
    ...(releaseId === undefined ? {} : { releaseId }),
    checks,
  }
}

import type { ConnectionBudget, PgPoolView, PoolStats } from '@fastify-pg-pool/core'
import type { ResolvedHealthOptions } from './options.js'
import type { PingResult } from './ping-cache.js'

/** draft-inadarei-api-health-check: `pass` and `warn` answer 200, `fail` answers 503. */
export type HealthStatus = 'pass' | 'warn' | 'fail'

type ListenerStats = ReturnType<PgPoolView['listener']>
type ReplicaState = NonNullable<ReturnType<PgPoolView['replica']>>

/** One measurement of a check (draft-inadarei-api-health-check, "checks"). */
export interface HealthCheck {
  /** The pool measured: `primary`, a named instance's name, `replica-0`... (absent on `uptime`). */
  readonly componentId?: string
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
  /** The app's pools on this server counted in `observedValue` (this one first). */
  readonly pools: readonly string[]
}

/** `postgres:listener`: the LISTEN connection (`app.db.listen`), while anything listens. */
export interface ListenerCheck extends HealthCheck {
  readonly connected: boolean
  readonly channels: number
  readonly reconnections: number
}

/**
 * `postgres:replicationLag`: a read replica's lag, in seconds, with bytes as an extension; both
 * null while the lag is not known (the replica or its primary unreachable, a standby of another
 * cluster, one ahead of the primary).
 */
export interface ReplicationLagCheck extends Omit<HealthCheck, 'observedValue'> {
  readonly observedValue: number | null
  readonly bytes: number | null
  /** Whether reads go to the replica now. */
  readonly usable: boolean
}

/** Each key holds one entry per pool (its `componentId`), in the order the pools were registered. */
export interface HealthChecks {
  readonly 'postgres:responseTime'?: readonly HealthCheck[]
  readonly 'postgres:connections'?: readonly ConnectionsCheck[]
  readonly 'postgres:budget'?: readonly BudgetCheck[]
  readonly 'postgres:listener'?: readonly ListenerCheck[]
  readonly 'postgres:replicationLag'?: readonly ReplicationLagCheck[]
  readonly uptime?: readonly HealthCheck[]
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

/** Any entry under a key of `checks`. */
type AnyCheck = HealthCheck | ReplicationLagCheck

const rank: Record<HealthStatus, number> = { pass: 0, warn: 1, fail: 2 }

function worst(statuses: HealthStatus[]): HealthStatus {
  return statuses.reduce<HealthStatus>((a, b) => (rank[b] > rank[a] ? b : a), 'pass')
}

function withOutput<T extends AnyCheck>(check: Omit<T, 'output'>, output: string | undefined): T {
  return (output === undefined ? check : { ...check, output }) as T
}

export function connectionsCheck(
  stats: PoolStats,
  options: ResolvedHealthOptions,
  time: string,
  componentId = 'primary',
): ConnectionsCheck {
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
      componentId,
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

/** SQLSTATE too_many_connections: the server (or the role, or the database) has no slot left. */
const TOO_MANY_CONNECTIONS = '53300'

/**
 * `open`: the pool's open connections. The ping opens a connection of its own: refused for want of
 * a slot (53300, or PgBouncer's 08P01 "no more connections allowed" at max_client_conn) while the
 * pool holds connections, the database answers and the pool serves, so readiness only warns (every
 * replica at its limit would otherwise leave the load balancer at once).
 */
export function responseTimeCheck(
  ping: PingResult,
  options: ResolvedHealthOptions,
  componentId = 'primary',
  open = 0,
): HealthCheck {
  const ms = Math.round(ping.ms * 10) / 10
  let status: HealthStatus = 'pass'
  let output: string | undefined
  if (!ping.ok && ping.serverCode === TOO_MANY_CONNECTIONS && open > 0) {
    status = 'warn'
    output = `no connection slot for the ping (${TOO_MANY_CONNECTIONS}): the server is at its connection limit; the pool's ${open} connections serve`
  } else if (!ping.ok && ping.poolerFull === true && open > 0) {
    // PgBouncer's own limit (max_client_conn), refused as 08P01: read as PostgreSQL's 53300.
    status = 'warn'
    output = `no connection slot for the ping (08P01 no more connections allowed): PgBouncer is at max_client_conn; the pool's ${open} connections serve`
  } else if (!ping.ok) {
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
      componentId,
      componentType: 'datastore',
      observedValue: ms,
      observedUnit: 'ms',
      status,
      time: new Date(ping.at).toISOString(),
    },
    output,
  )
}

export function budgetCheck(budget: ConnectionBudget, time: string, componentId = 'primary'): BudgetCheck {
  return withOutput<BudgetCheck>(
    {
      componentId,
      componentType: 'datastore',
      observedValue: budget.serverDemand,
      observedUnit: 'connections',
      status: budget.exceeded ? 'warn' : 'pass',
      time,
      maxConnections: budget.maxConnections,
      reserved: budget.reserved,
      available: budget.available,
      inUse: budget.inUse,
      instances: budget.instances,
      pools: budget.pools,
    },
    budget.exceeded
      ? budget.pools.length === 1
        ? `pool max ${budget.max} x ${budget.instances} instances = ${budget.demand} connections, more than the ${budget.available} the server allows`
        : `pool max ${budget.max} x ${budget.instances} instances = ${budget.demand} connections, ${budget.serverDemand} with the app's other pools on this server (${budget.pools.slice(1).join(', ')}), more than the ${budget.available} the server allows`
      : undefined,
  )
}

/** Warns while the LISTEN connection is down: notifications sent meanwhile are lost. */
export function listenerCheck(listener: ListenerStats, time: string, componentId = 'primary'): ListenerCheck {
  return withOutput<ListenerCheck>(
    {
      componentId,
      componentType: 'datastore',
      observedValue: listener.listeners,
      observedUnit: 'listeners',
      status: listener.connected ? 'pass' : 'warn',
      time,
      connected: listener.connected,
      channels: listener.channels,
      reconnections: listener.reconnections,
    },
    listener.connected ? undefined : `LISTEN connection down: reconnecting (${listener.channels} channels)`,
  )
}

/** Warns while a replica gets no reads (lagging past maxLag, or not a usable standby). */
export function replicationLagCheck(
  replica: ReplicaState,
  lag: NonNullable<ReplicaState['lag']>,
  time: string,
  componentId: string,
): ReplicationLagCheck {
  const seconds = Math.round(lag.seconds * 1000) / 1000
  let output: string | undefined
  if (!replica.usable) {
    const { maxLag } = replica
    const lagging = lag.seconds > maxLag.seconds || lag.bytes > maxLag.bytes
    // The bounds that were set: the other one is infinite (the default maxLag bounds seconds only).
    const bounds = [
      ...(Number.isFinite(maxLag.seconds) ? [`${maxLag.seconds} s`] : []),
      ...(Number.isFinite(maxLag.bytes) ? [`${maxLag.bytes} bytes`] : []),
    ].join(', ')
    output =
      lag.error !== undefined
        ? 'replica not usable for reads (unreachable, or no longer a standby)'
        : lagging
          ? // Its time is not known while it has replayed no commit since it started, nor reached a
            // position of the primary's: the bytes alone then.
            `replica lagging: ${Number.isFinite(seconds) ? `${seconds} s, ${lag.bytes} bytes behind` : `${lag.bytes} bytes behind, for a time not known`} (maxLag ${bounds}): reads go elsewhere`
          : // Within maxLag by its last sample: that sample is not recent, or the pool refuses leases.
            'replica not usable for reads: its last lag sample is not recent (the lag monitor has not reached it lately), or its pool refuses new leases'
  }
  return withOutput<ReplicationLagCheck>(
    {
      componentId,
      componentType: 'datastore',
      // Infinite when not known: JSON has no Infinity (it would be null, unsaid).
      observedValue: Number.isFinite(seconds) ? seconds : null,
      observedUnit: 's',
      status: replica.usable ? 'pass' : 'warn',
      time,
      bytes: Number.isFinite(lag.bytes) ? lag.bytes : null,
      usable: replica.usable,
    },
    output,
  )
}

/** What readiness reads of one pool. */
export interface PoolReading {
  /** The pool's label (`view.name`): the checks' componentId. */
  readonly name: string
  /**
   * Its failure fails readiness: the default instance's primary (and the primaries of
   * `requireInstances`). Any other pool, replicas included, degrades readiness to `warn`.
   */
  readonly required: boolean
  readonly stats: PoolStats
  readonly budget: ConnectionBudget | undefined
  readonly listener: ListenerStats
  readonly replica: ReplicaState | undefined
  /** undefined while shutting down (no ping then). */
  readonly ping: PingResult | undefined
  /** A ping succeeded before: with `requireDatabase: 'startup'` a failed ping only warns. */
  readonly everPassed: boolean
}

export interface ReadinessInput {
  /** Every pool of the app, in registration order. */
  readonly pools: readonly PoolReading[]
  /** `app.close()` began: readiness fails, no ping is made. */
  readonly draining: boolean
}

type CheckKey = Exclude<keyof HealthChecks, 'uptime'>

/** The readiness body; `fail` answers 503. */
export function readiness(input: ReadinessInput, options: ResolvedHealthOptions): HealthResponse {
  const time = new Date().toISOString()
  const checks = new Map<CheckKey, AnyCheck[]>()
  const outputs: string[] = []
  const statuses: HealthStatus[] = []
  if (input.draining) {
    statuses.push('fail')
    outputs.push('shutting down')
  }
  // Reasons name their pool once there is more than one.
  const named = input.pools.length > 1
  for (const pool of input.pools) {
    const add = (key: CheckKey, check: AnyCheck, status: HealthStatus = check.status) => {
      const entries = checks.get(key)
      if (entries === undefined) checks.set(key, [check])
      else entries.push(check)
      // A pool readiness does not depend on (a replica, another instance) only degrades it.
      statuses.push(status === 'fail' && !pool.required ? 'warn' : status)
      if (check.output !== undefined) outputs.push(named ? `${pool.name}: ${check.output}` : check.output)
    }
    if (pool.ping !== undefined && !input.draining) {
      const responseTime = responseTimeCheck(pool.ping, options, pool.name, pool.stats.open - pool.stats.connecting)
      add(
        'postgres:responseTime',
        responseTime,
        responseTime.status === 'fail' && options.requireDatabase === 'startup' && pool.everPassed
          ? 'warn'
          : responseTime.status,
      )
    }
    add('postgres:connections', connectionsCheck(pool.stats, options, time, pool.name))
    if (pool.budget !== undefined) add('postgres:budget', budgetCheck(pool.budget, time, pool.name))
    if (pool.listener.listeners > 0) add('postgres:listener', listenerCheck(pool.listener, time, pool.name))
    const lag = pool.replica?.lag
    if (pool.replica !== undefined && lag !== undefined) {
      add('postgres:replicationLag', replicationLagCheck(pool.replica, lag, time, pool.name))
    }
  }
  const status = worst(statuses)
  return present(
    status,
    status === 'pass' ? undefined : outputs.join('; '),
    Object.fromEntries(checks) as HealthChecks,
    options,
  )
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

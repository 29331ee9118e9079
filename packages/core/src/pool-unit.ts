import type { FastifyBaseLogger } from 'fastify'
import type * as postgres from 'postgres'
import type { Clock } from './clock.js'
import { type ConnectionBudget, readServerSlots } from './connection-budget.js'
import { connectionFactory } from './connection-factory.js'
import { connectFailure, type ErrorMapping } from './error-mapping.js'
import { Lease, type LeaseContext } from './lease.js'
import type { ListenerStats } from './listener.js'
import type { ResolvedConnection, ResolvedPoolOptions } from './options.js'
import { Pool } from './pool.js'
import { type TrackedQueryConstructor, typeArrayMapOf } from './postgres-adapter.js'
import { createPoolDb, type QueryApiContext } from './query-api.js'
import { redactSecret } from './redact.js'
import type { ServerBudgets } from './server-budgets.js'
import { NO_ACTIVE_TRANSACTION } from './session-reset.js'
import type { PgPoolView, ReplicaState } from './types.js'
import { createView } from './view.js'

export interface PoolUnitSettings {
  readonly log: FastifyBaseLogger
  /** The pool's label (metrics, health): 'primary', the instance's name, 'replica-0', ... */
  readonly name: string
  readonly instance: string | undefined
  readonly role: 'primary' | 'replica'
  readonly connection: ResolvedConnection
  readonly options: ResolvedPoolOptions
  readonly clock: Clock
  /** The instance's helpers client (never connects): the Query class and the array type oids. */
  readonly helpers: postgres.Sql<{}>
  readonly Query: TrackedQueryConstructor
  readonly api: QueryApiContext
  readonly mapping: ErrorMapping
  readonly onConnect?: ((db: postgres.Sql<{}>) => unknown) | undefined
  /** A replica's routing state (its lag, whether it gets reads). */
  readonly replica?: (() => ReplicaState) | undefined
  /** Read-your-writes: leases on this (primary) pool learn the position of their writes. */
  readonly captureLsn?: boolean
  /** The instance's LISTEN connection, on its primary's view. */
  readonly listener?: (() => ListenerStats) | undefined
  readonly leaseApplicationName?: LeaseContext['leaseApplicationName']
  /** The app's pools by server, for the connection budget (shared by every instance). */
  readonly budgets: ServerBudgets
}

/** One pool of an instance (its primary, or a replica) with everything built around it. */
export interface PoolUnit {
  readonly pool: Pool
  readonly view: PgPoolView
  /** How leases of this pool run. */
  readonly ctx: LeaseContext
  /** The same for reads routed here when no replica could take them: a read-only session. */
  readonly readOnlyCtx: LeaseContext
  /** Opens a first connection (unless lazy) and reads the server's connection budget. */
  start(): Promise<void>
  end(timeoutMs: number): Promise<void>
}

export function createPoolUnit(settings: PoolUnitSettings): PoolUnit {
  const { log, connection, options, clock, helpers } = settings
  const redact = (text: string) => redactSecret(text, connection.secret)
  const onNotice = (notice: { severity?: string; code?: string; message?: string }): boolean | undefined => {
    // A session reset's ROLLBACK after a holder that may have left a transaction open: the pool's.
    if (notice.code === NO_ACTIVE_TRANSACTION) return true
    // Not its text: a notice can quote a statement's values (`raise notice '%', $1`).
    log.debug({ notice: { severity: notice.severity, code: notice.code } }, 'postgres notice')
    return undefined
  }
  // The ping opens its connection exactly as the pool does (onConnect, the primary check of a host
  // list): a readiness that skipped them would pass while every pool connection fails. It starts
  // from the host the pool last found to be the primary, as the pool's next opening would.
  const factorySettings = {
    hostPreference: { index: 0 },
    connection,
    options,
    clock,
    onNotice,
    arrayTypes: typeArrayMapOf(helpers),
    onConnect: settings.onConnect,
    requirePrimary: settings.role === 'primary',
    leased: true,
  }
  const connectError = (error: unknown): Error => connectFailure(error, redact)

  let budget: (() => ConnectionBudget) | undefined
  let view: PgPoolView | undefined
  const pool = new Pool({
    options,
    clock,
    factory: connectionFactory(factorySettings),
    connectError,
    view: () => view as PgPoolView,
  })
  view = createView({
    pool: () => pool,
    clock,
    options,
    name: settings.name,
    instance: settings.instance,
    role: settings.role,
    target: connection.target,
    database: connection.database,
    redact,
    budget: () => budget?.(),
    replica: settings.replica,
    listener: settings.listener,
    pingFactory: (timeoutMs) =>
      connectionFactory({
        ...factorySettings,
        arrayTypes: undefined,
        connectTimeout: timeoutMs,
        timeoutSpansHosts: true,
        applicationName: `${options.applicationName}/ping`,
        leased: false,
      }),
    connectError,
    listenerFailed: (event, error) =>
      log.error({ err: error, pool: settings.name, event }, `an app.pgPool.on('${event}') listener failed`),
  })

  let lastConnectFailed = false
  pool.on('connectError', (error) => {
    // The first failure after a success at warn; the retries that follow at debug.
    log[lastConnectFailed ? 'debug' : 'warn'](
      { err: error, pool: settings.name },
      'could not open a database connection',
    )
    lastConnectFailed = true
  })
  pool.on('connect', () => {
    lastConnectFailed = false
  })
  pool.on('resetError', (error) => {
    log.warn(
      { err: { message: error.message, code: (error as { code?: unknown }).code }, pool: settings.name },
      'a session reset failed: its connection was retired',
    )
  })

  const ctx: LeaseContext = {
    pool,
    clock,
    options,
    Query: settings.Query,
    surface: { statementTimeout: options.statementTimeout, retryAfter: options.retryAfter, mapping: settings.mapping },
    view: () => view as PgPoolView,
    onLeak: (lease, heldMs) => {
      const request = lease.settings.request as { log?: FastifyBaseLogger; method?: string; id?: string } | undefined
      ;(request?.log ?? log).warn(
        {
          route: lease.route,
          method: request?.method,
          reqId: request?.id,
          pool: settings.name,
          heldMs,
          threshold: options.leakDetectionThreshold,
        },
        'database connection held longer than leakDetectionThreshold',
      )
    },
    // Only a primary that can fail over (a host list): a 25006 there means another host is the primary now.
    writable: settings.role === 'primary' && connection.hosts.length > 1,
    captureLsn: settings.captureLsn === true,
    leaseApplicationName: settings.leaseApplicationName,
  }
  const readOnlyCtx: LeaseContext = { ...ctx, readOnly: true, writable: false, captureLsn: false }

  const checkBudget = async () => {
    if (options.pgbouncer) return
    const db = createPoolDb(settings.api, () => new Lease(ctx, { route: 'connection budget', oneShot: true }))
    const slots = await readServerSlots(db, connection.target.split('/')[0] as string)
    budget = settings.budgets.join(slots, settings.name, options.max, options.instances)
    const now = budget()
    if (now.exceeded) {
      const others = now.pools.slice(1)
      const total =
        others.length === 0
          ? ','
          : `, ${now.serverDemand} with the app's other pools on this server (${others.join(', ')}),`
      log.warn(
        { ...now, max: options.max, pool: settings.name },
        `pool ${settings.name}: max ${options.max} x ${options.instances} instances = ${now.demand} connections${total} more than the ${now.available} the server allows (max_connections ${now.maxConnections} - ${now.reserved} reserved); lower pool.max or put PgBouncer in front`,
      )
    }
  }

  return {
    pool,
    view,
    ctx,
    readOnlyCtx,
    async start() {
      const budgetOnConnect = () =>
        pool.once('connect', () => {
          checkBudget().catch((error: unknown) => log.debug({ err: error }, 'could not read the connection budget'))
        })
      if (options.lazy) {
        budgetOnConnect()
        return
      }
      try {
        await pool.warmUp()
      } catch (error) {
        // A replica down at startup fails no register: its reads go to the primary until the lag
        // monitor reaches it, as when it goes down later (the error was logged as connectError).
        if (settings.role !== 'replica') throw error
        log.warn(
          { pool: settings.name },
          `replica ${settings.name} is unreachable at startup: the primary serves its reads until it answers`,
        )
        budgetOnConnect()
        return
      }
      await checkBudget().catch((error: unknown) => log.warn({ err: error }, 'could not read the connection budget'))
    },
    end: (timeoutMs) => pool.end(timeoutMs),
  }
}

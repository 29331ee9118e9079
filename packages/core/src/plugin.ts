import { readFile } from 'node:fs/promises'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { systemClock } from './clock.js'
import { type ConnectionBudget, readConnectionBudget } from './connection-budget.js'
import { connectionFactory } from './connection-factory.js'
import { defaultErrorMapping, type ErrorMapping } from './error-mapping.js'
import { errors } from './errors.js'
import { type Instance, Instances } from './instances.js'
import { Lease, type LeaseContext } from './lease.js'
import {
  checkKeys,
  coreOptionAliases,
  coreOptionKeys,
  describe,
  fastifyRegisterKeys,
  invalidOption,
} from './option-kit.js'
import { resolveConnection, resolvePoolOptions } from './options.js'
import { Pool } from './pool.js'
import { createHelpers, trackedQueryClass, typeArrayMapOf } from './postgres-adapter.js'
import { createLeaseDb, createPoolDb, type QueryApiContext } from './query-api.js'
import { redactSecret } from './redact.js'
import { RequestLeases } from './request-lease.js'
import { RouteSettingsCache } from './route-settings.js'
import { NO_ACTIVE_TRANSACTION } from './session-reset.js'
import type { PgPoolCoreOptions, PgPoolView, PoolDb } from './types.js'
import { createView } from './view.js'

/** `errorMapping`: false, or SQLSTATE codes (5) or classes (2) to HTTP error statuses, over the defaults. */
function resolveErrorMapping(raw: unknown): ErrorMapping {
  if (raw === false) return false
  if (raw === undefined) return defaultErrorMapping
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw invalidOption('errorMapping', `expected false or an object of SQLSTATE to status, got ${describe(raw)}`)
  }
  for (const [code, status] of Object.entries(raw)) {
    if (!/^[0-9A-Z]{2}([0-9A-Z]{3})?$/.test(code)) {
      throw invalidOption(`errorMapping.${code}`, 'expected a SQLSTATE (5 characters) or a class (2)')
    }
    if (typeof status !== 'number' || !Number.isInteger(status) || status < 400 || status > 599) {
      throw invalidOption(`errorMapping.${code}`, `expected an HTTP error status (400-599), got ${describe(status)}`)
    }
  }
  // A class the user maps wins over the defaults' codes of that class ('23': 422 maps 23505 too).
  const defaults = Object.entries(defaultErrorMapping).filter(
    ([code]) => !(code.length === 5 && (raw as Record<string, number>)[code.slice(0, 2)] !== undefined),
  )
  return Object.freeze({ ...Object.fromEntries(defaults), ...(raw as Record<string, number>) })
}

/** Names that would collide with labels or with the objects instances are reached through. */
const reservedNames = new Set(['primary', '__proto__', 'constructor', 'prototype'])

/** `name`: undefined for the default instance, else a name for `app.dbs.<name>` and metric labels. */
function resolveInstanceName(raw: unknown): string | undefined {
  if (raw === undefined) return undefined
  if (typeof raw !== 'string' || !/^[A-Za-z_][A-Za-z0-9_-]{0,62}$/.test(raw) || reservedNames.has(raw)) {
    throw invalidOption(
      'name',
      `expected an instance name (a letter or _, then letters, digits, _ or -; not 'primary'), got ${describe(raw)}`,
    )
  }
  return raw
}

/** What every registration of the core on one app shares: the instances and the request wiring. */
interface Shared {
  readonly instances: Instances
  readonly requests: RequestLeases
  readonly dbs: Record<string, PoolDb>
}
const kShared = Symbol.for('fastify-pg-pool.shared')

function sharedOf(app: FastifyInstance): Shared {
  const existing = (app as unknown as Record<symbol, Shared | undefined>)[kShared]
  if (existing !== undefined) return existing
  const instances = new Instances()
  const routes = new RouteSettingsCache((name) => instances.has(name) && instances.instance(name, '').hasOnLease)
  const shared: Shared = { instances, requests: new RequestLeases(app, instances, routes), dbs: Object.create(null) }
  app.decorate(kShared, shared)
  app.decorate('pgPools', instances)
  app.decorate('dbs', shared.dbs)
  return shared
}

const pgPoolCorePlugin: FastifyPluginAsync<PgPoolCoreOptions> = async (app, opts) => {
  checkKeys('', opts, coreOptionKeys, { ignore: fastifyRegisterKeys, aliases: coreOptionAliases })
  const name = resolveInstanceName(opts.name)
  const shared = sharedOf(app)
  if (shared.instances.has(name)) {
    throw invalidOption(
      'name',
      name === undefined
        ? 'an instance without a name is registered already: give this one a name (request.dbs.<name>)'
        : `an instance named ${describe(name)} is registered already`,
    )
  }
  const env = process.env
  const { connection, fromUrl } = resolveConnection(opts.connection, env)
  const options = resolvePoolOptions(opts.pool, fromUrl, env)
  const mapping = resolveErrorMapping(opts.errorMapping)
  const redact = (text: string) => redactSecret(text, connection.secret)
  const onLease = opts.onLease
  if (onLease !== undefined && typeof onLease !== 'function') {
    throw invalidOption('onLease', 'expected a function (request, db) => void | Promise<void>')
  }
  const onConnect = opts.onConnect
  if (onConnect !== undefined && typeof onConnect !== 'function') {
    throw invalidOption('onConnect', 'expected a function (db) => void | Promise<void>')
  }
  const clock = systemClock

  // Never connects: it only builds helpers (identifiers, json, arrays) with the user's types
  // and transforms, and lends its Query class to the tracked queries.
  const helpers = createHelpers(connection.url, connection.options)
  const onNotice = (notice: { severity?: string; code?: string; message?: string }) => {
    // A session reset's ROLLBACK after a holder that may have left a transaction open.
    if (notice.code === NO_ACTIVE_TRANSACTION) return
    app.log.debug(
      { notice: { severity: notice.severity, code: notice.code, message: notice.message } },
      'postgres notice',
    )
  }
  const settings = { connection, options, clock, onNotice, arrayTypes: typeArrayMapOf(helpers) }
  const connectError = (error: unknown): Error => {
    if ((error as { code?: unknown } | null)?.code === 'FST_PG_POOL_CONNECT_FAILED') return error as Error
    const code = (error as { code?: unknown } | null)?.code ?? 'unknown'
    const message = error instanceof Error ? error.message : String(error)
    // The driver's detail (host, port, reason) is the cause: in logs, never in a client's body.
    const detail = Object.assign(new Error(redact(`${String(code)}: ${message}`)), { code })
    const coded = new errors.FST_PG_POOL_CONNECT_FAILED()
    Object.defineProperty(coded, 'cause', { value: detail, enumerable: false, configurable: true })
    return coded
  }

  let budget: ConnectionBudget | undefined
  let view: PgPoolView | undefined
  const pool = new Pool({
    options,
    clock,
    factory: connectionFactory({ ...settings, onConnect }),
    connectError,
    view: () => view as PgPoolView,
  })
  view = createView({
    pool: () => pool,
    clock,
    options,
    name: name ?? 'primary',
    instance: name,
    role: 'primary',
    target: connection.target,
    redact,
    budget: () => budget,
    pingFactory: (timeoutMs) =>
      connectionFactory({
        ...settings,
        arrayTypes: undefined,
        connectTimeout: timeoutMs,
        applicationName: `${options.applicationName}/ping`,
      }),
    connectError,
  })

  let lastConnectFailed = false
  pool.on('connectError', (error) => {
    // The first failure after a success at warn; the retries that follow at debug.
    app.log[lastConnectFailed ? 'debug' : 'warn']({ err: error }, 'could not open a database connection')
    lastConnectFailed = true
  })
  pool.on('connect', () => {
    lastConnectFailed = false
  })
  pool.on('resetError', (error) => {
    app.log.warn(
      { err: { message: error.message, code: (error as { code?: unknown }).code } },
      'a session reset failed: its connection was retired',
    )
  })

  const ctx: LeaseContext = {
    pool,
    clock,
    options,
    Query: trackedQueryClass(helpers),
    surface: { statementTimeout: options.statementTimeout, retryAfter: options.retryAfter, mapping },
    view: () => view as PgPoolView,
    onLeak: (lease, heldMs) => {
      const request = lease.settings.request as { log?: typeof app.log; method?: string; id?: string } | undefined
      const log = request?.log ?? app.log
      log.warn(
        {
          route: lease.route,
          method: request?.method,
          reqId: request?.id,
          heldMs,
          threshold: options.leakDetectionThreshold,
        },
        'database connection held longer than leakDetectionThreshold',
      )
    },
  }
  const api: QueryApiContext = { helpers, readFile: (path) => readFile(path, 'utf8') }
  const poolRoute = name === undefined ? 'app.db' : `app.dbs.${name}`
  const poolDb = createPoolDb(api, (oneShot) => new Lease(ctx, { route: poolRoute, oneShot }))
  const leaseOnLease =
    onLease === undefined
      ? undefined
      : (request: unknown) => async (lease: Lease) => {
          await onLease(request as Parameters<typeof onLease>[0], createLeaseDb(lease, api, true))
        }
  const instance: Instance = {
    name,
    api,
    poolDb,
    views: [view],
    hasOnLease: onLease !== undefined,
    // onLease prepares a request's own connection: not a job's (app.db), not a shared one.
    newLease: (leaseSettings) =>
      new Lease(ctx, {
        ...leaseSettings,
        onLease:
          leaseOnLease !== undefined && leaseSettings.request !== undefined && !leaseSettings.pipelined
            ? leaseOnLease(leaseSettings.request)
            : undefined,
      }),
  }
  shared.instances.add(instance)
  if (name === undefined) {
    app.decorate('pgPool', view)
    app.decorate('db', poolDb)
  } else {
    shared.dbs[name] = poolDb
    shared.requests.addInstance(name)
  }

  // Fastify waits for requests in flight before onClose: a hung statement would hold close()
  // open past closeTimeout. The clock starts at preClose; past it, leases are cancelled and cut.
  let closeTimer: NodeJS.Timeout | undefined
  let closeDeadline = Number.POSITIVE_INFINITY
  app.addHook('preClose', (done) => {
    closeDeadline = Date.now() + options.closeTimeout
    closeTimer = setTimeout(() => void pool.end(0), options.closeTimeout).unref()
    done()
  })
  app.addHook('onClose', async () => {
    clearTimeout(closeTimer)
    // What is left of closeTimeout since preClose (all of it when preClose did not run).
    await pool.end(Math.max(0, Math.min(options.closeTimeout, closeDeadline - Date.now())))
    await helpers.end({ timeout: 0 })
  })

  const checkBudget = async () => {
    if (options.pgbouncer) return
    budget = await readConnectionBudget(poolDb, options.max, options.instances)
    if (budget.exceeded) {
      app.log.warn(
        { ...budget, max: options.max },
        `pool max ${options.max} x ${options.instances} instances = ${budget.demand} connections, more than the ${budget.available} the server allows (max_connections ${budget.maxConnections} - ${budget.reserved} reserved); lower pool.max or put PgBouncer in front`,
      )
    }
  }
  if (!options.lazy) {
    try {
      await pool.warmUp()
    } catch (error) {
      await pool.end(0)
      await helpers.end({ timeout: 0 })
      throw error
    }
    await checkBudget().catch((error: unknown) => app.log.warn({ err: error }, 'could not read the connection budget'))
  } else {
    pool.once('connect', () => {
      checkBudget().catch((error: unknown) => app.log.debug({ err: error }, 'could not read the connection budget'))
    })
  }
}

/** Registers the lease pool, `request.db`, `app.db` and `app.pgPool`. */
export const pgPoolCore = fp(pgPoolCorePlugin, { name: '@fastify-pg-pool/core', fastify: '5.x' })

import { readFile } from 'node:fs/promises'
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { systemClock } from './clock.js'
import { defaultErrorMapping, type ErrorMapping } from './error-mapping.js'
import { drainOf } from './http-drain.js'
import { type Instance, Instances } from './instances.js'
import { Lease, type LeaseContext } from './lease.js'
import { Listener } from './listener.js'
import { ServerLsnSource } from './lsn-source.js'
import {
  checkKeys,
  coreOptionAliases,
  coreOptionKeys,
  describe,
  fastifyRegisterKeys,
  invalidOption,
  MAX_DURATION_MS,
} from './option-kit.js'
import { resolveConnection, resolvePoolOptions, resolveReplicas } from './options.js'
import { createPoolUnit } from './pool-unit.js'
import { createHelpers, trackedQueryClass } from './postgres-adapter.js'
import { createLeaseDb, createPoolDb, type QueryApiContext } from './query-api.js'
import { ReadYourWrites } from './read-your-writes.js'
import { ReplicaMonitor } from './replica-monitor.js'
import { type ReadRoute, ReplicaRouter } from './replica-router.js'
import { RequestLeases } from './request-lease.js'
import { RouteSettingsCache } from './route-settings.js'
import { ServerBudgets } from './server-budgets.js'
import { RESET_CHECK } from './session-reset.js'
import type { PgPoolCoreOptions, PoolDb } from './types.js'

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
/** SQLSTATE invalid_sql_statement_name: EXECUTE of a prepared statement the session does not have. */
const INVALID_SQL_STATEMENT_NAME = '26000'

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

/** The labels of an instance's pools (metrics, health, logs): its primary's, then each replica's. */
function poolLabels(name: string | undefined, replicas: number): string[] {
  const replica = name === undefined ? 'replica-' : `${name}-replica-`
  return [name ?? 'primary', ...Array.from({ length: replicas }, (_, index) => `${replica}${index}`)]
}

/** What every registration of the core on one app shares: the instances and the request wiring. */
interface Shared {
  readonly instances: Instances
  readonly requests: RequestLeases
  readonly routes: RouteSettingsCache
  readonly budgets: ServerBudgets
  readonly dbs: Record<string, PoolDb>
}
/**
 * One Shared per app, whichever context registers first: keyed by the app's server, which every
 * encapsulated context of one app shares (a child context that registers a named instance before
 * the root registers the default one would otherwise have a registry of its own, and its routes
 * would know no default instance). In a registry on globalThis: two copies of this package in one
 * process share it too.
 */
const kShared = Symbol.for('fastify-pg-pool.shared')
const sharedByApp: WeakMap<object, Shared> =
  ((globalThis as Record<symbol, unknown>)[kShared] as WeakMap<object, Shared> | undefined) ?? new WeakMap()
;(globalThis as Record<symbol, unknown>)[kShared] = sharedByApp

function sharedOf(app: FastifyInstance): Shared {
  let shared = sharedByApp.get(app.server)
  if (shared === undefined) {
    const instances = new Instances()
    const routes = new RouteSettingsCache((name) =>
      instances.has(name) ? instances.instance(name, '').hasOnLease : undefined,
    )
    shared = {
      instances,
      requests: new RequestLeases(instances, routes),
      routes,
      budgets: new ServerBudgets(),
      dbs: Object.create(null),
    }
    const server = app.server
    sharedByApp.set(server, shared)
    // A new app may be built on the same server once this one closed (serverFactory, a reload).
    app.addHook('onClose', (_instance, done) => {
      sharedByApp.delete(server)
      done()
    })
  }
  // Wired into each context that does not see it yet: the first registration's, and an ancestor's
  // registered after a child's (decorators reach children through prototypes, hooks do not reach
  // a child context made before them, so no route gets the hooks twice).
  if (!shared.requests.wiredIn(app)) shared.requests.wire(app)
  // The core's own registry, not a `pgPools` of the app's (Fastify then refuses the decoration).
  if (!app.hasDecorator('pgPools') || app.pgPools !== shared.instances.registry) {
    app.decorate('pgPools', shared.instances.registry)
    // Through a getter: Fastify reads a decorated value with a `getter` or `setter` function as an
    // accessor, and `dbs` holds one once an instance named so was registered (in another context).
    const dbs = shared.dbs
    app.decorate('dbs', { getter: () => dbs })
  }
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
  // A named instance given `connection: undefined` (`process.env.ANALYTICS_URL` not set), or null (a
  // config loader's missing setting): without the key, DATABASE_URL is the default instance's
  // database, where its writes would land unseen.
  if (name !== undefined && Object.hasOwn(opts, 'connection') && (opts.connection ?? undefined) === undefined) {
    throw invalidOption(
      'connection',
      `instance ${describe(name)} was given a connection that is ${opts.connection === null ? 'null' : 'undefined'} (an environment variable not set?); leave the key out to use DATABASE_URL and the PG* variables`,
    )
  }
  const env = process.env
  const { connection, fromUrl } = resolveConnection(opts.connection, env)
  const options = resolvePoolOptions(opts.pool, fromUrl, env)
  const replicaSettings = resolveReplicas(opts.replicas, opts.replica, opts.pool, env)
  const labels = poolLabels(name, replicaSettings.replicas.length)
  const taken = shared.instances.takenLabel(labels)
  if (taken !== undefined) {
    throw invalidOption(
      taken === labels[0] ? 'name' : 'replicas',
      `this instance's pool would be labelled ${describe(taken)}, the label of another pool of this app already ` +
        '(metrics and health tell pools apart by label): give one of the two instances another name',
    )
  }
  const mapping = resolveErrorMapping(opts.errorMapping)
  const onLease = opts.onLease
  if (onLease !== undefined && typeof onLease !== 'function') {
    throw invalidOption('onLease', 'expected a function (request, db) => void | Promise<void>')
  }
  const onConnect = opts.onConnect
  if (onConnect !== undefined && typeof onConnect !== 'function') {
    throw invalidOption('onConnect', 'expected a function (db) => void | Promise<void>')
  }
  const clock = systemClock
  const log = app.log

  // Never connects: it only builds helpers (identifiers, json, arrays) with the user's types
  // and transforms, and lends its Query class to the tracked queries.
  const helpers = createHelpers(connection.url, connection.options)
  const api: QueryApiContext = { helpers, readFile: (path) => readFile(path, 'utf8') }
  const Query = trackedQueryClass(helpers)
  const readYourWrites =
    replicaSettings.readYourWrites === false
      ? undefined
      : new ReadYourWrites(replicaSettings.readYourWrites, `${name ?? ''}\0${connection.database}`)
  const labelLease = opts.leaseApplicationName
  if (labelLease !== undefined && typeof labelLease !== 'function') {
    throw invalidOption('leaseApplicationName', 'expected a function (request, route) => string | undefined')
  }
  if (labelLease !== undefined && options.pgbouncer) {
    throw invalidOption(
      'leaseApplicationName',
      'it sets application_name on the server session, which PgBouncer in transaction mode hands to other clients; remove it or pgbouncer',
    )
  }
  // onConnect runs on every pool of the instance, the replicas' too: behind a transaction-mode
  // pooler its session state (SET ROLE, search_path, ...) lands on one server connection that
  // other clients get next, while this app's statements run on others without it.
  if (onConnect !== undefined) {
    const behindPooler = options.pgbouncer
      ? 'pool.pgbouncer'
      : replicaSettings.replicas.findIndex((replica) => replica.options.pgbouncer)
    if (behindPooler !== -1) {
      throw invalidOption(
        'onConnect',
        `it sets session state on a server connection, which PgBouncer in transaction mode (${typeof behindPooler === 'string' ? behindPooler : `replicas[${behindPooler}].pool.pgbouncer`}: true) hands to other clients while this app's statements run on others; use onLease with transaction-local settings (SET LOCAL) on transaction routes, or settings of the role or database`,
      )
    }
  }
  // A label that fails leaves the lease with the pool's name (said once): it never fails the request.
  let labelFailed = false
  const leaseApplicationName: LeaseContext['leaseApplicationName'] =
    labelLease === undefined
      ? undefined
      : (request, route) => {
          try {
            const name = labelLease(request as FastifyRequest | undefined, route)
            return typeof name === 'string' && name !== '' ? name : undefined
          } catch (error) {
            if (!labelFailed) {
              labelFailed = true
              log.warn({ err: error, route }, "leaseApplicationName threw: leases keep the pool's application_name")
            }
            return undefined
          }
        }
  const common = {
    log,
    instance: name,
    clock,
    helpers,
    Query,
    api,
    mapping,
    onConnect,
    leaseApplicationName,
    budgets: shared.budgets,
  }
  // app.db.listen: LISTEN on a connection of the instance's own, outside the lease pool.
  const listenerLog = { pool: name ?? 'primary' }
  const listener = new Listener({
    url: connection.url,
    options: connection.options,
    hosts: connection.hosts,
    applicationName: `${options.applicationName}/listen`,
    clock,
    connectTimeout: options.connectTimeout,
    // A timer's delay: capped at what a timer can wait (each part is, their sum is not).
    listenTimeout: Math.min(MAX_DURATION_MS, options.connectTimeout + options.statementTimeout + 1_000),
    pgbouncer: options.pgbouncer,
    redact: (text) => primary.view.redact(text),
    passwordFailure: connection.passwordFailure,
    onNotice: (notice) => {
      // Not its text: a notice can quote a statement's values.
      log.debug({ notice: { severity: notice.severity, code: notice.code } }, 'postgres notice')
      return undefined
    },
    onHandlerError: (error, channel) => log.error({ err: error, channel, ...listenerLog }, 'a LISTEN handler failed'),
    onConnectedChange: (connected) => {
      if (connected) log.info(listenerLog, 'the LISTEN connection is back: every channel is listened to again')
      else log.warn(listenerLog, 'the LISTEN connection was lost: reconnecting')
    },
  })

  const primary = createPoolUnit({
    ...common,
    name: labels[0] as string,
    role: 'primary',
    connection,
    options,
    captureLsn: readYourWrites !== undefined,
    listener: () => listener.stats(),
  })
  const replicaCount = replicaSettings.replicas.length
  const monitorSource =
    replicaCount === 0
      ? undefined
      : new ServerLsnSource(
          connection,
          replicaSettings.replicas.map((replica) => replica.connection),
          options.applicationName,
          clock,
        )
  const monitor =
    monitorSource === undefined
      ? undefined
      : new ReplicaMonitor(clock, monitorSource, replicaCount, replicaSettings.lagInterval)
  let router: ReplicaRouter | undefined
  const replicas = replicaSettings.replicas.map((replica, index) =>
    createPoolUnit({
      ...common,
      name: labels[index + 1] as string,
      role: 'replica',
      connection: replica.connection,
      options: replica.options,
      replica: () => ({
        lag: monitor?.lag(index),
        usable: router?.usable(index) ?? false,
        maxLag: replicaSettings.maxLag,
      }),
    }),
  )
  if (monitor !== undefined) {
    router = new ReplicaRouter(
      replicas.map((replica) => replica.pool),
      monitor,
      replicaSettings.maxLag,
    )
  }
  const units = [primary, ...replicas]
  // The reset's own prepared check missing from the session (26000 naming RESET_CHECK): a request
  // dropped it (DEALLOCATE ALL, DISCARD ALL), or a transaction-mode pooler gave the connection
  // another server session between two statements. The pool cannot tell them apart (the same
  // refusal on the same session), so it keeps serving; said at error level, as the second means
  // one request's session state can reach another's.
  units.forEach((unit, index) => {
    if ((index === 0 ? options : replicaSettings.replicas[index - 1]?.options)?.pgbouncer !== false) return
    unit.pool.on('resetError', (error) => {
      const code = (error as { code?: unknown }).code
      if (code !== INVALID_SQL_STATEMENT_NAME || !error.message.includes(RESET_CHECK)) return
      log.error(
        { pool: labels[index] },
        "the session reset's own check was gone from the session (26000): a request ran DEALLOCATE ALL or DISCARD ALL, or a transaction-mode pooler (PgBouncer) moved the connection to another server session between two statements, where one request's session state (SET ROLE, search_path, ...) reaches other requests; behind one, set pool.pgbouncer: true",
      )
    })
  })
  // Reads routed to a replica that went down since its last sample go to the primary instead.
  // Behind its own PgBouncer a replica's sessions cannot start read-only (PgBouncer refuses the
  // startup parameter): its reads are made read-only per lease, with BEGIN READ ONLY blocks.
  const routedCtx: LeaseContext[] = replicas.map((replica, index) => ({
    ...(replicaSettings.replicas[index]?.options.pgbouncer === true ? replica.readOnlyCtx : replica.ctx),
    fallback: () => {
      primary.pool.readFallback('unreachable')
      return primary.readOnlyCtx
    },
  }))

  /** Where a read goes: a usable replica (past `atLeast`), else the primary, read-only. */
  const readTarget = (request: unknown): (() => LeaseContext | Promise<LeaseContext>) | undefined => {
    if (router === undefined) return () => primary.readOnlyCtx
    const atLeast =
      readYourWrites === undefined || request === undefined
        ? undefined
        : readYourWrites.read(request as Parameters<ReadYourWrites['read']>[0])
    const resolve = (route: ReadRoute): LeaseContext => {
      if (route.replica !== undefined) return routedCtx[route.replica] as LeaseContext
      primary.pool.readFallback(route.reason)
      return primary.readOnlyCtx
    }
    const chosen = router
    if (atLeast === undefined) return () => resolve(chosen.route())
    return () => {
      const now = chosen.route(atLeast)
      if (now.replica !== undefined || now.reason !== 'behind_write') return resolve(now)
      return chosen.routeAfter(atLeast, (readYourWrites as ReadYourWrites).settings.maxWait).then(resolve)
    }
  }

  const poolRoute = name === undefined ? 'app.db' : `app.dbs.${name}`
  const poolDb = createPoolDb(
    api,
    (oneShot) => new Lease(primary.ctx, { route: poolRoute, oneShot }),
    (channel, onNotify) => listener.listen(channel, onNotify),
  )
  app.addHook('onClose', () => listener.close())
  if (replicaCount > 0) {
    // app.db.replica: one-shot reads routed like a read-only route's.
    const replicaDb = createPoolDb(
      api,
      (oneShot) =>
        new Lease(primary.readOnlyCtx, {
          route: `${poolRoute}.replica`,
          oneShot,
          readOnly: true,
          target: readTarget(undefined),
        }),
    )
    Object.defineProperty(poolDb, 'replica', { value: replicaDb, enumerable: false })
  }
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
    views: units.map((unit) => unit.view),
    hasOnLease: onLease !== undefined,
    hasReplicas: replicaCount > 0,
    readYourWrites,
    // onLease prepares a request's own connection: not a job's (app.db), not a shared one.
    newLease: (leaseSettings) => {
      const readOnly = leaseSettings.readOnly === true
      const prepared = leaseOnLease !== undefined && leaseSettings.request !== undefined && !leaseSettings.pipelined
      // The common case (a request's lease on the primary, no hook) takes its settings as they are.
      if (!readOnly && !prepared) return new Lease(primary.ctx, leaseSettings)
      // A standby refuses SERIALIZABLE transactions (0A000 at BEGIN, "cannot use serializable mode
      // in a hot standby"): such a route transaction reads on the primary, in its read-only transaction.
      const routed = readOnly && leaseSettings.begin?.includes(' SERIALIZABLE') !== true
      return new Lease(readOnly ? primary.readOnlyCtx : primary.ctx, {
        ...leaseSettings,
        target: routed ? readTarget(leaseSettings.request) : undefined,
        onLease: prepared ? leaseOnLease(leaseSettings.request) : undefined,
      })
    },
  }

  let added = false
  try {
    for (const unit of units) await unit.start()
    await monitor?.start()
    // Last, with nothing awaited before the instance is added: covers every route declared so far.
    shared.routes.instanceAdded(name, instance.hasOnLease)
    // Inside: a decoration that throws (the app has a `db` of its own) ends the pools it opened.
    if (name === undefined) {
      app.decorate('pgPool', primary.view)
      app.decorate('db', poolDb)
    } else {
      // Not writable: no code of the app can swap another's instance for its own.
      Object.defineProperty(shared.dbs, name, { value: poolDb, enumerable: true, writable: false, configurable: false })
      shared.requests.addInstance(name)
    }
    // Last: an onAdd listener that throws (an observer's, e.g. otel's poolName) fails the
    // registration here, where its pools are ended and the instance counted ended (onClosed).
    added = true
    shared.instances.add(instance)
  } catch (error) {
    monitor?.stop()
    await Promise.all(units.map((unit) => unit.end(0)))
    await monitorSource?.end()
    await helpers.end({ timeout: 0 })
    if (added) shared.instances.ended((err) => app.log.error({ err }, 'an app.pgPools.onClosed listener failed'))
    throw error
  }

  // Fastify waits for requests in flight before onClose: a hung statement would hold close()
  // open past closeTimeout. The clock starts at preClose (a drain of health's, drainDelay, runs
  // on it: health refuses one as long as closeTimeout); past it, leases are cancelled and cut,
  // and reads waiting for a replica to replay their write (maxWait) stop waiting. Once Fastify
  // stops accepting connections, HTTP/1.1 connections close as they turn idle (HttpDrain).
  let closeTimer: NodeJS.Timeout | undefined
  let closeDeadline = Number.POSITIVE_INFINITY
  const drain = drainOf(app.server)
  app.addHook('preClose', (done) => {
    closeDeadline = performance.now() + options.closeTimeout
    closeTimer = setTimeout(() => {
      monitor?.stop()
      for (const unit of units) void unit.end(0)
    }, options.closeTimeout).unref()
    drain.start()
    done()
  })
  app.addHook('onClose', async () => {
    drain.stop()
    clearTimeout(closeTimer)
    monitor?.stop()
    // What is left of closeTimeout since preClose (all of it when preClose did not run).
    const left = Math.max(0, Math.min(options.closeTimeout, closeDeadline - performance.now()))
    await Promise.all(units.map((unit) => unit.end(left)))
    await monitorSource?.end()
    await helpers.end({ timeout: 0 })
    // Observers stop listening once every instance's pools have ended (PgPoolRegistry.onClosed).
    shared.instances.ended((error) => app.log.error({ err: error }, 'an app.pgPools.onClosed listener failed'))
  })
}

/** Registers the lease pool, `request.db`, `app.db` and `app.pgPool`. */
export const pgPoolCore = fp(pgPoolCorePlugin, { name: '@fastify-pg-pool/core', fastify: '5.x' })

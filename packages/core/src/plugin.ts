import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import postgres from 'postgres'
import { type ConnectionBudget, readConnectionBudget } from './connection-budget.js'
import { sharedOf } from './connection-slot.js'
import { errors, invalidOption, retryableCodes } from './errors.js'
import { createHandleContext, finished, type HandleContext, LeaseHandle } from './lease-handle.js'
import { LeasePool } from './lease-pool.js'
import { resolveConnection, resolvePoolOptions } from './options.js'
import { beginStatement, createLeaseDb, createPoolDb } from './query-api.js'
import { redactSecret } from './redact.js'
import type { PgPoolCoreOptions, PgPoolView, RequestDb, RouteDbConfig, TransactionOptions } from './types.js'

const kLease = Symbol('fastify-pg-pool.lease')
const kDb = Symbol('fastify-pg-pool.db')

type LeaseRequest = FastifyRequest & { [kLease]: LeaseHandle | null; [kDb]: RequestDb | null }

const isolationLevels = new Set(['read committed', 'repeatable read', 'serializable'])
const routeDbKeys = new Set(['transaction', 'pipeline'])

interface RouteSettings {
  /** The BEGIN statement when the whole request is one transaction. */
  readonly begin: string | undefined
  readonly pipelined: boolean
}

const exclusive: RouteSettings = { begin: undefined, pipelined: false }

/** What a route's `config.db` asks of its lease, validated once per route and plugin instance. */
function routeSettings(
  config: RouteDbConfig | undefined,
  url: string,
  hasOnLease: boolean,
  settingsByConfig: WeakMap<object, RouteSettings>,
): RouteSettings {
  if (config === undefined || config === false) return exclusive
  let settings = settingsByConfig.get(config)
  if (settings !== undefined) return settings
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw invalidOption(`config.db of ${url}`, 'expected false or an object')
  }
  const unknownKey = Object.keys(config).find((key) => !routeDbKeys.has(key))
  if (unknownKey !== undefined) throw invalidOption(`config.db.${unknownKey} of ${url}`, 'unknown option')
  const pipeline = config.pipeline ?? false
  if (typeof pipeline !== 'boolean') throw invalidOption(`config.db.pipeline of ${url}`, 'expected a boolean')
  const begin = transactionBegin(config.transaction, url)
  if (pipeline && begin !== undefined) {
    throw invalidOption(`config.db of ${url}`, 'a pipelined route shares its connection and cannot be a transaction')
  }
  if (pipeline && hasOnLease) {
    throw invalidOption(
      `config.db.pipeline of ${url}`,
      'onLease prepares a connection of its own; a pipelined route shares one',
    )
  }
  settings = { begin, pipelined: pipeline }
  settingsByConfig.set(config, settings)
  return settings
}

function transactionBegin(tx: boolean | TransactionOptions | undefined, url: string): string | undefined {
  let begin: string | undefined
  if (tx === undefined || tx === false) begin = undefined
  else if (tx === true) begin = beginStatement(true)
  else if (typeof tx === 'object' && tx !== null) {
    const { isolation, readOnly, deferrable, ...rest } = tx as TransactionOptions & Record<string, unknown>
    const unknown = Object.keys(rest)[0]
    if (unknown !== undefined) throw invalidOption(`config.db.transaction.${unknown} of ${url}`, 'unknown option')
    if (isolation !== undefined && !isolationLevels.has(isolation)) {
      throw invalidOption(
        `config.db.transaction.isolation of ${url}`,
        `expected one of ${[...isolationLevels].join(', ')}`,
      )
    }
    for (const [name, value] of [
      ['readOnly', readOnly],
      ['deferrable', deferrable],
    ] as const) {
      if (value !== undefined && typeof value !== 'boolean') {
        throw invalidOption(`config.db.transaction.${name} of ${url}`, 'expected a boolean')
      }
    }
    begin = beginStatement(tx)
  } else throw invalidOption(`config.db.transaction of ${url}`, 'expected a boolean or an object')
  return begin
}

/** host, port and database of a `host:port/database` target. */
function endpointOf(target: string): PgPoolView['endpoint'] {
  const slash = target.indexOf('/')
  const hostPort = slash === -1 ? target : target.slice(0, slash)
  const colon = hostPort.lastIndexOf(':')
  return Object.freeze({
    host: colon === -1 ? hostPort : hostPort.slice(0, colon),
    port: colon === -1 ? 5432 : Number(hostPort.slice(colon + 1)) || 5432,
    database: slash === -1 ? '' : target.slice(slash + 1),
  })
}

function isStream(payload: unknown): boolean {
  return typeof payload === 'object' && payload !== null && typeof (payload as { pipe?: unknown }).pipe === 'function'
}

const pgPoolCore: FastifyPluginAsync<PgPoolCoreOptions> = async (app, opts) => {
  const env = process.env
  const { connection, fromUrl } = resolveConnection(opts.connection, env)
  const options = resolvePoolOptions(opts.pool, fromUrl, env)
  const redact = (text: string) => redactSecret(text, connection.secret)
  const onLease = opts.onLease
  if (onLease !== undefined && typeof onLease !== 'function') {
    throw invalidOption('onLease', 'expected a function (request, db) => void | Promise<void>')
  }

  // Never connects: it only builds helpers (identifiers, json, arrays) with the user's types
  // and transforms, and lends its Query class to the tracked queries.
  const helpers =
    connection.url === undefined
      ? postgres({ ...connection.options, max: 1 })
      : postgres(connection.url, { ...connection.options, max: 1 })
  const pool = new LeasePool(
    connection,
    options,
    (notice) =>
      app.log.debug(
        { notice: { severity: notice.severity, code: notice.code, message: notice.message } },
        'postgres notice',
      ),
    sharedOf(helpers).typeArrayMap,
  )

  const ctx: HandleContext = createHandleContext(pool, helpers, (handle, heldMs) => {
    const request = handle.settings.request as FastifyRequest | undefined
    const log = request?.log ?? app.log
    log.warn(
      {
        route: handle.settings.route,
        method: request?.method,
        reqId: request?.id,
        heldMs,
        threshold: options.leakDetectionThreshold,
      },
      'database connection held longer than leakDetectionThreshold',
    )
  })

  const view: PgPoolView = {
    stats: () => pool.stats(),
    ping: (timeoutMs) => pool.ping(timeoutMs),
    on(event, listener) {
      pool.on(event, listener as never)
      return view
    },
    off(event, listener) {
      pool.off(event, listener as never)
      return view
    },
    options,
    target: connection.target,
    name: 'primary',
    endpoint: endpointOf(connection.target),
    redact,
    budget: () => budget,
    shed(reason, route) {
      pool.emit('shed', reason, route)
    },
  }

  pool.view = view
  app.decorate('pgPool', view)
  // Per instance: whether a config is valid depends on this instance's onLease.
  const settingsByConfig = new WeakMap<object, RouteSettings>()
  const poolDb = createPoolDb(ctx, (oneShot) => new LeaseHandle(ctx, { route: 'app.db', oneShot }))
  app.decorate('db', poolDb)
  app.decorateRequest(kLease, null)
  app.decorateRequest(kDb, null)
  app.decorateRequest('db', {
    getter(this: FastifyRequest) {
      const request = this as LeaseRequest
      const existing = request[kDb]
      if (existing !== null) return existing
      // Fastify builds a new routeOptions object on every read: read it once.
      const routeOptions = request.routeOptions
      const config = routeOptions.config.db
      const route = routeOptions.url ?? 'unknown'
      if (config === false) throw new errors.FST_PG_POOL_ROUTE_OPTED_OUT(route)
      // Client aborts arrive through onRequestAbort. request.signal (an AbortController per
      // request) is only needed for handlerTimeout: cancel what runs or waits, and hand the
      // lease back once the handler's queries have settled.
      const timed = (routeOptions.handlerTimeout ?? 0) > 0
      const { begin, pipelined } = routeSettings(config, route, onLease !== undefined, settingsByConfig)
      const handle = new LeaseHandle(ctx, {
        route,
        request,
        begin,
        pipelined,
        signal: timed ? () => request.signal : undefined,
        onAttach: timed
          ? () => request.signal.addEventListener('abort', () => void handle.finish('abort'), { once: true })
          : undefined,
        onLease:
          onLease === undefined
            ? undefined
            : async () => {
                await onLease(request, createLeaseDb(handle.setupView(), helpers))
              },
      })
      const db = createLeaseDb(handle, helpers)
      request[kLease] = handle
      request[kDb] = db
      return db
    },
  })

  app.addHook('onRoute', (route) => {
    routeSettings(route.config?.db, route.url, onLease !== undefined, settingsByConfig)
  })

  app.addHook('onSend', (request, reply, payload, done) => {
    const handle = (request as LeaseRequest)[kLease]
    if (handle === null || handle.finished || isStream(payload)) return done(null, payload)
    const finishing = handle.finish(reply.statusCode >= 400 ? 'rollback' : 'commit')
    if (!handle.inTransaction) {
      if (finishing !== finished) {
        finishing.catch((error: unknown) => request.log.error({ err: error }, 'returning the connection failed'))
      }
      return done(null, payload)
    }
    // The commit is awaited: a client must never see success for work that was not committed.
    finishing.then(
      () => done(null, payload),
      (error: Error) => done(error),
    )
  })

  // Backstop for replies that skip onSend (hijacked, streamed): the lease still comes back.
  app.addHook('onResponse', (request, reply, done) => {
    const handle = (request as LeaseRequest)[kLease]
    if (handle !== null && !handle.finished) {
      handle
        .finish(reply.statusCode >= 400 ? 'rollback' : 'commit')
        .catch((error: unknown) => request.log.error({ err: error }, 'returning the connection failed'))
    }
    done()
  })

  app.addHook('onRequestAbort', (request, done) => {
    const handle = (request as LeaseRequest)[kLease]
    if (handle !== null) void handle.finish('abort').catch(() => {})
    done()
  })

  app.addHook('onError', (_request, reply: FastifyReply, error, done) => {
    const code = (error as { code?: unknown }).code
    if (typeof code === 'string' && retryableCodes.has(code)) {
      reply.header('retry-after', String(options.retryAfter))
    }
    done()
  })

  // Fastify waits for requests in flight before onClose: a hung query would hold close() open
  // past closeTimeout. The clock starts at preClose; past it, leases are cancelled and cut.
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

  let budget: ConnectionBudget | undefined
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
export const pgPoolCorePlugin = fp(pgPoolCore, { name: '@fastify-pg-pool/core', fastify: '5.x' })

export type { FastifyInstance }

import type { FastifyInstance, FastifyReply, FastifyRequest, preHandlerHookHandler } from 'fastify'
import { errors } from './errors.js'
import { finished, type Lease, type LeaseSettings } from './lease.js'
import { createLeaseDb, type QueryApiContext } from './query-api.js'
import { gateRawResponse } from './reply-gate.js'
import type { RouteSettingsCache } from './route-settings.js'
import type { RequestDb } from './types.js'

const kLease = Symbol('fastify-pg-pool.lease')
const kDb = Symbol('fastify-pg-pool.db')
/** The request is over for the database: a first use of request.db now is refused. */
const kEnded = Symbol('fastify-pg-pool.ended')

type LeaseRequest = FastifyRequest & { [kLease]: Lease | null; [kDb]: RequestDb | null; [kEnded]: boolean }

export interface RequestLeaseDeps {
  readonly routes: RouteSettingsCache
  readonly api: QueryApiContext
  readonly newLease: (settings: LeaseSettings) => Lease
  readonly onLease: ((request: FastifyRequest, lease: Lease) => Promise<void>) | undefined
}

function isStream(payload: unknown): boolean {
  return typeof payload === 'object' && payload !== null && typeof (payload as { pipe?: unknown }).pipe === 'function'
}

function failureBody(error: unknown): { statusCode: number; body: string } {
  const { statusCode = 500, code, message } = error as { statusCode?: number; code?: string; message?: string }
  return {
    statusCode,
    body: JSON.stringify({ statusCode, code, error: 'Internal Server Error', message }),
  }
}

/**
 * `request.db` and the life of a request's lease in Fastify's lifecycle: leased on its first
 * query, returned when the request is over, on every path:
 * - `onSend`: the reply is decided. A route transaction commits here, before the first byte of
 *   any payload (a stream too: it cannot query after that); otherwise the lease goes back,
 *   except while a streamed payload still reads (then at `onResponse`).
 * - `onResponse`: the response ended (streams, hijacked replies): the backstop.
 * - `onRequestAbort` and handlerTimeout (the request's signal): statements are stopped.
 * After any of these, a first use of `request.db` is refused like a later one.
 */
export function registerRequestLeases(app: FastifyInstance, deps: RequestLeaseDeps): void {
  const { routes, api, newLease, onLease } = deps
  app.decorateRequest(kLease, null)
  app.decorateRequest(kDb, null)
  app.decorateRequest(kEnded, false)
  app.decorateRequest('db', {
    getter(this: FastifyRequest) {
      const request = this as LeaseRequest
      const existing = request[kDb]
      if (existing !== null) return existing
      // Fastify builds a new routeOptions object on every read: read it once.
      const routeOptions = request.routeOptions
      const route = routeOptions.url ?? 'unknown'
      const settings = routes.of(routeOptions.config.db, route)
      if (settings.optedOut) throw new errors.FST_PG_POOL_ROUTE_OPTED_OUT(route)
      const lease = newLease({
        route,
        request,
        begin: settings.begin,
        pipelined: settings.pipelined,
        onLease: onLease === undefined ? undefined : (held) => onLease(request, held),
      })
      if (request[kEnded]) {
        // A first use after the request ended: refused like any use after the end.
        void lease.finish('rollback')
      } else if ((routeOptions.handlerTimeout ?? 0) > 0) {
        // handlerTimeout aborts request.signal (an AbortController per request, only for such
        // routes): stop what runs or waits, and hand the lease back.
        request.signal.addEventListener('abort', () => void lease.finish('abort').catch(() => {}), { once: true })
      }
      const db = createLeaseDb(lease, api)
      request[kLease] = lease
      request[kDb] = db
      return db
    },
  })

  // Transaction routes only: a hijacked reply's raw writes wait for the COMMIT.
  const gateHijack: preHandlerHookHandler = (request, reply, done) => {
    const hijack = reply.hijack
    reply.hijack = function (this: FastifyReply) {
      hijack.call(this)
      gateRawResponse(
        this.raw,
        (statusCode) => {
          const leased = request as LeaseRequest
          leased[kEnded] = true
          const lease = leased[kLease]
          if (lease === null || lease.finished) return finished
          return lease.finish(statusCode >= 400 ? 'rollback' : 'commit')
        },
        (error) => {
          request.log.error({ err: error }, 'the route transaction of a hijacked reply was not committed')
          return failureBody(error)
        },
      )
      return this
    }
    done()
  }

  app.addHook('onRoute', (route) => {
    const settings = routes.of(route.config?.db, route.url)
    if (settings.begin === undefined) return
    const existing = route.preHandler
    route.preHandler = existing === undefined ? [gateHijack] : [...[existing].flat(), gateHijack]
  })

  app.addHook('onSend', (request, reply, payload, done) => {
    const leased = request as LeaseRequest
    const lease = leased[kLease]
    if (lease === null) {
      // A streamed payload of a route without a transaction may still read with request.db.
      if (!isStream(payload) || routes.of(request.routeOptions.config.db, '').begin !== undefined) {
        leased[kEnded] = true
      }
      return done(null, payload)
    }
    if (lease.finished) return done(null, payload)
    const mode = reply.statusCode >= 400 ? 'rollback' : 'commit'
    if (!lease.inTransaction) {
      // The connection stays with a streamed payload until it has been sent (onResponse).
      if (isStream(payload)) return done(null, payload)
      leased[kEnded] = true
      const finishing = lease.finish(mode)
      if (finishing !== finished) {
        finishing.catch((error: unknown) => request.log.error({ err: error }, 'returning the connection failed'))
      }
      return done(null, payload)
    }
    // The COMMIT before the first byte: a client never sees success for work not committed.
    leased[kEnded] = true
    lease.finish(mode).then(
      () => done(null, payload),
      (error: Error) => {
        if (isStream(payload)) (payload as { destroy?: () => void }).destroy?.()
        done(error)
      },
    )
  })

  // Backstop for replies that end after onSend (streams) or without it (hijacked).
  app.addHook('onResponse', (request, reply, done) => {
    const leased = request as LeaseRequest
    leased[kEnded] = true
    const lease = leased[kLease]
    if (lease !== null && !lease.finished) {
      lease
        .finish(reply.statusCode >= 400 ? 'rollback' : 'commit')
        .catch((error: unknown) => request.log.error({ err: error }, 'returning the connection failed'))
    }
    done()
  })

  app.addHook('onRequestAbort', (request, done) => {
    const leased = request as LeaseRequest
    leased[kEnded] = true
    const lease = leased[kLease]
    if (lease !== null) void lease.finish('abort').catch(() => {})
    done()
  })
}

import type { Clock } from './clock.js'
import type { ConnectionBudget } from './connection-budget.js'
import { CONNECT_TIMEOUT, type ConnectionFactory, OPENING_DEADLINE } from './connection-factory.js'
import { errors } from './errors.js'
import { type ListenerStats, NO_LISTENER } from './listener.js'
import type { ResolvedPoolOptions } from './options.js'
import type { Pool } from './pool.js'
import type { PgPoolView, ReplicaState } from './types.js'

export interface ViewDeps {
  readonly pool: () => Pool
  readonly clock: Clock
  readonly options: ResolvedPoolOptions
  readonly name: string
  readonly instance: string | undefined
  readonly role: 'primary' | 'replica'
  readonly target: string
  readonly redact: (text: string) => string
  readonly budget: () => ConnectionBudget | undefined
  readonly replica?: (() => ReplicaState) | undefined
  /** Opens a connection outside the pool, bounded by `timeoutMs` (`<applicationName>/ping`). */
  readonly pingFactory: (timeoutMs: number) => ConnectionFactory
  /** The instance's LISTEN connection (a replica's view has none). */
  readonly listener?: (() => ListenerStats) | undefined
  readonly connectError: (error: unknown) => Error
}

/**
 * host, port and database of a `host:port/database` target; of a host list
 * (`a:5432,b:5432/database`), its first host: the conventions name one server.
 */
export function endpointOf(target: string): PgPoolView['endpoint'] {
  const slash = target.indexOf('/')
  const hostPort = (slash === -1 ? target : target.slice(0, slash)).split(',')[0] as string
  const colon = hostPort.lastIndexOf(':')
  return Object.freeze({
    host: colon === -1 ? hostPort : hostPort.slice(0, colon),
    port: colon === -1 ? 5432 : Number(hostPort.slice(colon + 1)) || 5432,
    database: slash === -1 ? '' : target.slice(slash + 1),
  })
}

/** The read-only view of one pool: what observers may read, nothing they can change. */
export function createView(deps: ViewDeps): PgPoolView {
  const view: PgPoolView = {
    stats: () => deps.pool().stats(),
    wouldRefuse: (pipelined) => deps.pool().wouldRefuse(pipelined),
    async ping(timeoutMs) {
      const started = deps.clock.now()
      let conn: Awaited<ReturnType<ConnectionFactory>> | undefined
      // The opening is bounded by timeoutMs; a primary's host list shares it among its hosts, tried
      // in turn from the pool's preferred one, and the whole ping is bounded too.
      const deadline = new AbortController()
      const timer = deps.clock.setTimeout(() => deadline.abort(OPENING_DEADLINE), timeoutMs)
      try {
        conn = await deps.pingFactory(timeoutMs)(deadline.signal)
        return deps.clock.now() - started
      } catch (error) {
        if (deadline.signal.aborted || (error as { code?: unknown }).code === CONNECT_TIMEOUT)
          throw new errors.FST_PG_POOL_QUERY_TIMEOUT(`${timeoutMs} ms`)
        throw deps.connectError(error)
      } finally {
        deps.clock.clearTimeout(timer)
        void conn?.end('shutdown', 0)
      }
    },
    listener: () => deps.listener?.() ?? NO_LISTENER,
    on(event, listener) {
      deps.pool().on(event, listener as never)
      return view
    },
    off(event, listener) {
      deps.pool().off(event, listener as never)
      return view
    },
    options: deps.options,
    target: deps.target,
    name: deps.name,
    instance: deps.instance,
    role: deps.role,
    endpoint: endpointOf(deps.target),
    replica: () => deps.replica?.(),
    redact: deps.redact,
    budget: deps.budget,
  }
  // Read-only for every observer: none can change what the others read.
  return Object.freeze(view)
}

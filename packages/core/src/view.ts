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
  /** The database connected to, decoded (a URL's path is percent-encoded in `target`). */
  readonly database?: string | undefined
  readonly redact: (text: string) => string
  readonly budget: () => ConnectionBudget | undefined
  readonly replica?: (() => ReplicaState) | undefined
  /** Opens a connection outside the pool, bounded by `timeoutMs` (`<applicationName>/ping`). */
  readonly pingFactory: (timeoutMs: number) => ConnectionFactory
  /** The instance's LISTEN connection (a replica's view has none). */
  readonly listener?: (() => ListenerStats) | undefined
  readonly connectError: (error: unknown) => Error
  /** A listener given to `on()` threw, or its promise rejected: reported, never the pool's. */
  readonly listenerFailed: (event: string, error: unknown) => void
}

type AnyListener = (...args: unknown[]) => unknown

/**
 * host, port and database of a `host:port/database` target; of a host list
 * (`a:5432,b:5432/database`), its first host: the conventions name one server.
 */
export function endpointOf(target: string): PgPoolView['endpoint'] {
  // The hosts end at the first `:port/`: a Unix socket's host is a directory (`/run/pg:5432/app`),
  // whose own slashes are no database's.
  const hostsEnd = /^.*?:\d+\//s.exec(target)?.[0].length
  const slash = hostsEnd === undefined ? target.indexOf('/') : hostsEnd - 1
  const hostPort = (slash === -1 ? target : target.slice(0, slash)).split(',')[0] as string
  const colon = hostPort.lastIndexOf(':')
  const host = colon === -1 ? hostPort : hostPort.slice(0, colon)
  return Object.freeze({
    // A URL's IPv6 literal keeps its brackets in `target`; the address is what is inside.
    host: host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host,
    port: colon === -1 ? 5432 : Number(hostPort.slice(colon + 1)) || 5432,
    database: slash === -1 ? '' : target.slice(slash + 1),
  })
}

/** The read-only view of one pool: what observers may read, nothing they can change. */
export function createView(deps: ViewDeps): PgPoolView {
  // The pool emits in the middle of its own state changes (a lease given, a connection taken
  // back): a listener's throw there left a connection leased for good, or ended the process
  // from a timer ('leak'), and a throw on 'close' failed app.close(). Each listener runs in a
  // guard of its own, kept per listener and event so that off() finds it.
  const guards = new WeakMap<AnyListener, Map<string, AnyListener[]>>()
  // Reporting must not throw either (a logger's serializer reading an error's throwing getter).
  const failed = (event: string, error: unknown) => {
    try {
      deps.listenerFailed(event, error)
    } catch {}
  }
  const guarded = (event: string, listener: AnyListener): AnyListener => {
    // Two arguments at most (PoolEvents): named, not a rest array allocated on every event.
    const guard: AnyListener = (first, second) => {
      try {
        const result = second === undefined ? listener(first) : listener(first, second)
        if (typeof (result as PromiseLike<unknown> | null)?.then === 'function') {
          ;(result as PromiseLike<unknown>).then(undefined, (error: unknown) => failed(event, error))
        }
      } catch (error) {
        failed(event, error)
      }
    }
    let byEvent = guards.get(listener)
    if (byEvent === undefined) {
      byEvent = new Map()
      guards.set(listener, byEvent)
    }
    const list = byEvent.get(event) ?? []
    list.push(guard)
    byEvent.set(event, list)
    return guard
  }
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
      deps.pool().on(event, guarded(event, listener as AnyListener) as never)
      return view
    },
    off(event, listener) {
      // As EventEmitter's off(): the listener added last goes first.
      const guard = guards
        .get(listener as AnyListener)
        ?.get(event)
        ?.pop()
      if (guard !== undefined) deps.pool().off(event, guard as never)
      return view
    },
    options: deps.options,
    target: deps.target,
    name: deps.name,
    instance: deps.instance,
    role: deps.role,
    endpoint:
      deps.database === undefined
        ? endpointOf(deps.target)
        : Object.freeze({ ...endpointOf(deps.target), database: deps.database }),
    replica: () => deps.replica?.(),
    redact: deps.redact,
    budget: deps.budget,
  }
  // Read-only for every observer: none can change what the others read.
  return Object.freeze(view)
}

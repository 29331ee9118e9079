import { errors } from '../src/errors.js'
import { type PoolOptions, resolvePoolOptions } from '../src/options.js'
import { type Holder, Pool, type PoolEvents } from '../src/pool.js'
import type { PoolConnection } from '../src/server-connection.js'
import { FakeClock } from './fake-clock.js'
import { FakeFactory } from './fake-connection.js'

/** A holder that records what the pool tells it; the test decides when it releases. */
export class FakeHolder implements Holder {
  /** Told that another holder opened a transaction block on the shared connection. */
  broken: Error | undefined
  readonly route: string
  readonly pipelined: boolean
  waitSince = 0
  waitMessage: Holder['waitMessage'] = undefined
  resume: Holder['resume'] = undefined
  /** The connection it got (after waiting), until a reroute takes it away. */
  conn: PoolConnection | undefined
  /** Why its wait ended without a connection (a coded error). */
  error: (Error & { code?: string }) | undefined
  readonly reroutes: PoolConnection[] = []
  readonly leaks: number[] = []
  aborts = 0
  /** What oldestQueryStart() answers: start of a statement still running, or 0. */
  queryStart = 0
  onAbort: (() => void) | undefined
  onReroute: ((conn: PoolConnection) => void) | undefined
  onFailed: ((error: Error) => void) | undefined

  constructor(route = '/r', pipelined = false) {
    this.route = route
    this.pipelined = pipelined
  }

  oldestQueryStart(): number {
    return this.queryStart
  }

  acquired(conn: PoolConnection): void {
    this.conn = conn
  }

  acquireFailed(error: Error): void {
    this.error = error
    this.onFailed?.(error)
  }

  reroute(conn: PoolConnection): void {
    this.reroutes.push(conn)
    this.conn = undefined
    this.onReroute?.(conn)
  }

  leaked(heldMs: number): void {
    this.leaks.push(heldMs)
  }

  abort(): void {
    this.aborts++
    this.onAbort?.()
  }

  sharedSessionBroken(error: Error): void {
    this.broken = error
  }
}

type Recorded = { [E in keyof PoolEvents]: [E, ...PoolEvents[E]] }[keyof PoolEvents]

/** The coded error the plugin makes of an opening failure (the driver's error as its cause). */
export function connectError(error: unknown): Error {
  const coded = new errors.FST_PG_POOL_CONNECT_FAILED()
  Object.defineProperty(coded, 'cause', { value: error, enumerable: false })
  return coded
}

export interface PoolHarness {
  readonly pool: Pool
  readonly clock: FakeClock
  readonly factory: FakeFactory
  /** Every event the pool emitted, in order, with its payload. */
  readonly events: Recorded[]
  /** The events of one kind, payloads only. */
  of<E extends keyof PoolEvents>(event: E): PoolEvents[E][]
  /** tryAcquire, else wait: the connection when it got one at once. */
  acquire(holder: Holder): PoolConnection | undefined
}

const eventNames: (keyof PoolEvents)[] = [
  'acquire',
  'acquireError',
  'release',
  'connect',
  'connectError',
  'close',
  'leak',
  'transaction',
  'resetError',
]

/** A Pool on a fake clock and fake connections; `setup` scripts the factory before anything opens. */
export function poolHarness(options: PoolOptions, setup?: (factory: FakeFactory) => void): PoolHarness {
  const clock = new FakeClock()
  const factory = new FakeFactory(clock)
  setup?.(factory)
  const pool = new Pool({ options: resolvePoolOptions(options, {}, {}), clock, factory: factory.open, connectError })
  const events: Recorded[] = []
  for (const name of eventNames) {
    pool.on(name, (...args: unknown[]) => {
      events.push([name, ...args] as Recorded)
    })
  }
  return {
    pool,
    clock,
    factory,
    events,
    of: <E extends keyof PoolEvents>(event: E) =>
      events.filter((e) => e[0] === event).map((e) => e.slice(1) as unknown as PoolEvents[E]),
    acquire(holder) {
      const conn = pool.tryAcquire(holder)
      if (conn !== undefined) {
        if (holder instanceof FakeHolder) holder.conn = conn
        return conn
      }
      pool.wait(holder)
      return undefined
    },
  }
}

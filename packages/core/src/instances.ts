import { errors } from './errors.js'
import type { Lease, LeaseSettings } from './lease.js'
import type { QueryApiContext } from './query-api.js'
import type { ReadYourWrites } from './read-your-writes.js'
import type { PgPoolView, PoolDb } from './types.js'

/**
 * One registration of the core: a database the app talks to. The default instance (no `name`)
 * is `request.db`, `app.db` and `app.pgPool`; a named one is `request.dbs.<name>`,
 * `app.dbs.<name>` and `app.pgPools.get('<name>')`, or `request.db` on routes that choose it
 * (`config.db.instance`).
 */
export interface Instance {
  readonly name: string | undefined
  readonly api: QueryApiContext
  readonly poolDb: PoolDb
  /** Its pools' views: the primary first. */
  readonly views: readonly PgPoolView[]
  readonly hasOnLease: boolean
  /** Read replicas are configured: `request.db.replica` exists. */
  readonly hasReplicas: boolean
  /** Read-your-writes tokens, when enabled. */
  readonly readYourWrites: ReadYourWrites | undefined
  /** A lease on this instance for a request (or a job); `readOnly` routes it to a replica. */
  newLease(settings: LeaseSettings): Lease
}

/** `app.pgPools`: every pool the app's instances opened, for observers (health, metrics, tracing). */
export interface PgPoolRegistry {
  /** Every pool of every instance, primaries and replicas, in registration order. */
  all(): readonly PgPoolView[]
  /** The primary pool of an instance: the default one without a name. */
  get(instance?: string): PgPoolView | undefined
  /** Calls `listener` for each pool registered from now on; returns the unsubscribe function. */
  onAdd(listener: (view: PgPoolView) => void): () => void
  /**
   * Calls `listener` once, when `app.close()` has ended every pool of every instance (each lease
   * came back or was cut, each connection closed): nothing more is published for them after it.
   * Observers stop listening here, not in an `onClose` hook of their own: Fastify runs `onClose`
   * hooks in reverse order of registration, so an observer's runs before the core's, while a
   * transaction cut by `closeTimeout` still has its ROLLBACK to answer. Registered after that, it
   * is called at once (on a microtask). Returns the unsubscribe function.
   */
  onClosed(listener: () => void): () => void
}

/** The app's instances, shared by every registration of the core on one Fastify app. */
export class Instances implements PgPoolRegistry {
  #default: Instance | undefined
  readonly #named = new Map<string, Instance>()
  /** Frozen, replaced on each add: what observers hold cannot change under them or be changed. */
  #views: readonly PgPoolView[] = Object.freeze([])
  readonly #listeners = new Set<(view: PgPoolView) => void>()
  readonly #closedListeners = new Set<() => void>()
  /** Instances whose pools have not ended yet. */
  #open = 0
  /** Every instance's pools have ended (app.close()). */
  #closed = false
  /** `app.pgPools`: what observers read, and nothing that registers or resolves instances. */
  readonly registry: PgPoolRegistry = Object.freeze({
    all: () => this.all(),
    get: (instance?: string) => this.get(instance),
    onAdd: (listener: (view: PgPoolView) => void) => this.onAdd(listener),
    onClosed: (listener: () => void) => this.onClosed(listener),
  })

  get default(): Instance | undefined {
    return this.#default
  }

  /** The instance a route or `request.dbs` names; throws a coded error for an unknown name. */
  instance(name: string | undefined, where: string): Instance {
    const instance = name === undefined ? this.#default : this.#named.get(name)
    if (instance === undefined) {
      throw new errors.FST_PG_POOL_UNKNOWN_INSTANCE(
        name === undefined ? 'the default instance (registered without a name)' : `"${name}"`,
        where,
      )
    }
    return instance
  }

  has(name: string | undefined): boolean {
    return name === undefined ? this.#default !== undefined : this.#named.has(name)
  }

  /**
   * The first of `labels` another pool of this app already carries. Metrics series and health
   * components tell pools apart by label alone: a second pool with one would overwrite the first.
   */
  takenLabel(labels: readonly string[]): string | undefined {
    return labels.find((label) => this.#views.some((view) => view.name === label))
  }

  names(): string[] {
    return [...this.#named.keys()]
  }

  /**
   * Counts `instance` open (its pools end with ended()) and tells the onAdd listeners. A listener
   * that throws keeps no other from running, nor the instance from being added whole: the first
   * error is thrown once all ran (the registration fails, and ends the pools it opened).
   */
  add(instance: Instance): void {
    this.#open++
    if (instance.name === undefined) this.#default = instance
    else this.#named.set(instance.name, instance)
    this.#views = Object.freeze([...this.#views, ...instance.views])
    let failure: { error: unknown } | undefined
    for (const view of instance.views) {
      for (const listener of this.#listeners) {
        try {
          listener(view)
        } catch (error) {
          failure ??= { error }
        }
      }
    }
    if (failure !== undefined) throw failure.error
  }

  all(): readonly PgPoolView[] {
    return this.#views
  }

  get(instance?: string): PgPoolView | undefined {
    return (instance === undefined ? this.#default : this.#named.get(instance))?.views[0]
  }

  onAdd(listener: (view: PgPoolView) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  onClosed(listener: () => void): () => void {
    if (this.#closed) {
      // Closed already: called at once (on a microtask, as it would not have been synchronous).
      queueMicrotask(listener)
      return () => {}
    }
    this.#closedListeners.add(listener)
    return () => this.#closedListeners.delete(listener)
  }

  /**
   * An instance's pools have ended (its onClose): once all have, the onClosed listeners run, each
   * once; one that throws is reported to `failed` and keeps no other from running.
   */
  ended(failed: (error: unknown) => void): void {
    this.#open--
    if (this.#open > 0) return
    this.#closed = true
    const listeners = [...this.#closedListeners]
    this.#closedListeners.clear()
    for (const listener of listeners) {
      try {
        listener()
      } catch (error) {
        failed(error)
      }
    }
  }
}

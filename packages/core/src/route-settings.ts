import { invalidOption, unknownKey } from './option-kit.js'
import { beginStatement, checkedBeginStatement } from './query-api.js'
import type { RouteDbConfig } from './types.js'

/** What a route's `config.db` asks of its lease. */
export interface RouteSettings {
  /** The BEGIN statement when the whole request is one transaction. */
  readonly begin: string | undefined
  readonly pipelined: boolean
  /** `config.db: false`: the route never uses the database. */
  readonly optedOut: boolean
  /** The named instance `request.db` uses on this route (the default instance when undefined). */
  readonly instance: string | undefined
  /** Reads only: routed to a replica when one is usable. */
  readonly readOnly: boolean
}

const exclusive: RouteSettings = Object.freeze({
  begin: undefined,
  pipelined: false,
  optedOut: false,
  instance: undefined,
  readOnly: false,
})
const optedOut: RouteSettings = Object.freeze({
  begin: undefined,
  pipelined: false,
  optedOut: true,
  instance: undefined,
  readOnly: false,
})

const routeKeys = ['transaction', 'pipeline', 'instance', 'readOnly']

/**
 * Whether the instance a route uses has onLease (which a pipelined route cannot use); undefined
 * while no instance of that name is registered.
 */
export type OnLeaseLookup = (instance: string | undefined) => boolean | undefined

/** Validates a route's `config.db` (at route declaration) and reads it once per config object. */
export class RouteSettingsCache {
  readonly #byConfig = new WeakMap<object, RouteSettings>()
  readonly #hasOnLease: OnLeaseLookup
  /**
   * Pipelined routes declared before the instance they use was registered, by instance ('' for
   * the default one): checked against its onLease when it registers (instanceAdded).
   */
  readonly #pipelinedBefore = new Map<string, string[]>()

  constructor(hasOnLease: OnLeaseLookup) {
    this.#hasOnLease = hasOnLease
  }

  /**
   * An instance is registered: a pipelined route declared before it, on it, is refused now if it
   * has onLease (declared after it, the route itself is refused), never served without the hook.
   */
  instanceAdded(instance: string | undefined, hasOnLease: boolean): void {
    const key = instance ?? ''
    const urls = this.#pipelinedBefore.get(key)
    this.#pipelinedBefore.delete(key)
    if (urls !== undefined && hasOnLease) {
      throw invalidOption(
        `config.db.pipeline of ${urls[0]}`,
        `onLease of ${instance === undefined ? 'the default instance' : `instance "${instance}"`} prepares a connection of its own; a pipelined route shares one`,
      )
    }
  }

  of(config: RouteDbConfig | undefined, url: string): RouteSettings {
    if (config === undefined) return exclusive
    if (config === false) return optedOut
    let settings = this.#byConfig.get(config)
    if (settings === undefined) {
      settings = this.#read(config, url)
      this.#byConfig.set(config, settings)
    }
    return settings
  }

  #read(config: unknown, url: string): RouteSettings {
    if (typeof config !== 'object' || config === null || Array.isArray(config)) {
      throw invalidOption(`config.db of ${url}`, 'expected false or an object')
    }
    for (const key of Object.keys(config)) {
      if (!routeKeys.includes(key)) throw unknownKey(`config.db.${key} of ${url}`, key, routeKeys)
    }
    const {
      pipeline = false,
      transaction,
      instance,
      readOnly = false,
    } = config as {
      pipeline?: unknown
      transaction?: unknown
      instance?: unknown
      readOnly?: unknown
    }
    if (typeof pipeline !== 'boolean') throw invalidOption(`config.db.pipeline of ${url}`, 'expected a boolean')
    if (typeof readOnly !== 'boolean') throw invalidOption(`config.db.readOnly of ${url}`, 'expected a boolean')
    if (instance !== undefined && (typeof instance !== 'string' || instance === '')) {
      throw invalidOption(`config.db.instance of ${url}`, 'expected the name of a registered instance')
    }
    const begin = transactionBegin(transaction, url)
    if (pipeline && begin !== undefined) {
      throw invalidOption(`config.db of ${url}`, 'a pipelined route shares its connection and cannot be a transaction')
    }
    // Its writes would all fail (25006) in a transaction that said READ WRITE: refused here.
    if (readOnly && (transaction as { readOnly?: unknown } | undefined)?.readOnly === false) {
      throw invalidOption(
        `config.db of ${url}`,
        'a readOnly route cannot run a read-write transaction (transaction.readOnly: false)',
      )
    }
    const hasOnLease = pipeline ? this.#hasOnLease(instance as string | undefined) : false
    if (hasOnLease === true) {
      throw invalidOption(
        `config.db.pipeline of ${url}`,
        'onLease prepares a connection of its own; a pipelined route shares one',
      )
    }
    if (hasOnLease === undefined) {
      const key = (instance as string | undefined) ?? ''
      const urls = this.#pipelinedBefore.get(key)
      if (urls === undefined) this.#pipelinedBefore.set(key, [url])
      else urls.push(url)
    }
    return Object.freeze({
      begin,
      pipelined: pipeline,
      optedOut: false,
      instance: instance as string | undefined,
      readOnly,
    })
  }
}

function transactionBegin(tx: unknown, url: string): string | undefined {
  if (tx === undefined || tx === false) return undefined
  if (tx === true) return beginStatement(true)
  if (typeof tx !== 'object' || tx === null || Array.isArray(tx)) {
    throw invalidOption(`config.db.transaction of ${url}`, 'expected a boolean or an object')
  }
  return checkedBeginStatement(tx, (key) => `config.db.transaction${key === undefined ? '' : `.${key}`} of ${url}`)
}

/** Route config that marks a route free of database plumbing (health probes, metrics). */
export function withoutDatabase<T extends object>(config: T): Omit<T, 'db'> & { db: false } {
  return { ...config, db: false }
}

/** Whether a route's config lets it use the database (admission control leaves the others alone). */
export function usesDatabase(config: { db?: unknown } | undefined): boolean {
  return config?.db !== false
}

/**
 * The named instance a route's `request.db` uses (`config.db.instance`), undefined for the
 * default one: for observers that judge a route by its pool (admission control). Reads a config
 * the core validated when the route was added.
 */
export function routeInstance(config: { db?: unknown } | undefined): string | undefined {
  const db = config?.db
  if (typeof db !== 'object' || db === null) return undefined
  const { instance } = db as { instance?: unknown }
  return typeof instance === 'string' ? instance : undefined
}

import type * as postgres from 'postgres'
import { errors } from './errors.js'
import type { Lease } from './lease.js'
import { invalidOption, unknownKey } from './option-kit.js'
import type { TrackedQuery } from './postgres-adapter.js'
import type { LeaseDb, LeasedDb, PoolDb, TransactionOptions } from './types.js'

type AnyFn = (...args: never[]) => unknown

/** What the query API builds its queries with: a lease, or the onLease hook's view of one. */
interface QuerySource {
  readonly lease: Lease
  /** Queries of the onLease hook run before the holder's own. */
  readonly setup: boolean
  /** The handle a `begin()` block gave its callback (the block's token): its queries run in that block. */
  readonly block: object | undefined
}

// postgres.js's own notify(), its function qualified (nothing through the search_path).
const notifyTemplate = ((strings: TemplateStringsArray, ..._: unknown[]) =>
  strings)`select pg_catalog.pg_notify(${0}, ${0})`

/** postgres.js's `(query, args?, options?)` where `(query, options)` is allowed too. */
function splitArgs(rest: [unknown?, object?], at: string): [unknown[], object] {
  const [first, second] = rest
  if (rest.some((arg) => typeof arg === 'function')) {
    // pg's `query(text, values, onResult)`: taken for options, the callback would never be called.
    throw invalidOption(at, 'takes no callback: it returns a promise (await it)')
  }
  if (rest.length === 1 && first !== undefined && !Array.isArray(first)) return [[], first as object]
  return [(first as unknown[] | undefined) ?? [], second ?? {}]
}

function build(source: QuerySource, strings: readonly string[], args: unknown[], options?: object): TrackedQuery {
  const query = source.lease.query(strings, args, options, source.setup)
  query.block = source.block
  return query
}

/** Adds the non-template query API (unsafe, file, notify, value helpers) to `target`. */
function addQueryApi(
  target: Record<string, unknown>,
  sourceFor: () => QuerySource,
  helpers: postgres.Sql<{}>,
  readFile: (path: string) => Promise<string>,
): void {
  target.unsafe = (text: string, ...rest: [unknown?, Record<string, unknown>?]) => {
    if (typeof text !== 'string') {
      // pg's `query({ text, values })`: the pool's bookkeeping reads the text, and a statement
      // whose text is no string would never settle (its lease held with it).
      throw invalidOption(
        'unsafe(text, values)',
        "expected the SQL text as a string (pg's { text, values } is unsafe(text, values))",
      )
    }
    const [list, options] = splitArgs(rest, 'unsafe(text, values)') as [unknown[], Record<string, unknown>]
    return build(sourceFor(), [text], list, {
      prepare: false,
      ...options,
      simple: 'simple' in options ? options.simple : list.length === 0,
    })
  }
  target.file = (path: string, ...rest: [unknown?, object?]) => {
    const [list, options] = splitArgs(rest, 'file(path, values)') as [unknown[], Record<string, unknown>]
    const { lease, setup, block } = sourceFor()
    // Read when it runs, as postgres.js does: the text is its only string. Without parameters
    // it goes by the simple protocol, as postgres.js sends it: a file may hold several statements.
    const fileOptions = { ...options, simple: 'simple' in options ? options.simple : list.length === 0 }
    const built = lease.query([], list, fileOptions, setup, (query) => {
      readFile(path).then(
        (text) => {
          query.strings = [text]
          lease.dispatch(query as TrackedQuery)
        },
        (error: unknown) => query.reject(error),
      )
    })
    built.block = block
    return built
  }
  target.notify = (channel: string, payload: string) => build(sourceFor(), notifyTemplate, [channel, `${payload}`])
  target.json = helpers.json
  target.array = helpers.array
  target.typed = helpers.typed
  target.types = helpers.types
  // What a cursor callback returns to end the cursor early (postgres.js's sentinel, one object).
  target.CLOSE = (helpers as unknown as { CLOSE: object }).CLOSE
  target.END = target.CLOSE
}

function templateOrHelper(sourceFor: () => QuerySource, helpers: postgres.Sql<{}>) {
  return function db(first: unknown, ...rest: unknown[]) {
    if (first !== null && typeof first === 'object' && Array.isArray((first as TemplateStringsArray).raw)) {
      // postgres.js takes any object with a `raw` array for a template's strings, and runs its
      // entries as SQL text: a JSON body `{"raw": [], "0": "..."}` given to a helper would.
      // A template's strings are an array, which neither JSON nor a query string can give a `raw`.
      if (!Array.isArray(first)) {
        throw invalidOption(
          'db(value)',
          'an object with a raw array is not a tagged template (its entries would run as SQL)',
        )
      }
      return build(sourceFor(), first as unknown as TemplateStringsArray, rest)
    }
    return (helpers as unknown as AnyFn)(...([first, ...rest] as never[]))
  }
}

/**
 * postgres.js's begin options (`'read write'`, `'isolation level serializable'`), sanitized as it
 * does. Anything but a string is refused: postgres.js throws on it, and an object
 * (`{ isolation: 'serializable' }`, the route config's shape) must not run as a plain BEGIN.
 */
function beginText(options: unknown, at: string): string {
  if (options === undefined) return 'BEGIN'
  if (typeof options !== 'string') {
    throw invalidOption(at, "expected a string such as 'isolation level serializable' or 'read only'")
  }
  return options !== '' ? `BEGIN ${options.replace(/[^a-z ]/gi, '')}` : 'BEGIN'
}

/** The callback's value; an array of queries is awaited as postgres.js's begin() does. */
async function settle<T>(value: T | Promise<T>): Promise<unknown> {
  const result = await value
  return Array.isArray(result) ? Promise.all(result) : result
}

/**
 * The handle a `begin()` block's or a `savepoint()`'s callback gets: its statements carry the
 * block's (or savepoint's) token, `begin()` is refused, and it has savepoints of its own.
 */
function blockHandle(source: QuerySource, ctx: QueryApiContext, nextName: () => string): LeaseDb {
  const own = () => source
  const handle = templateOrHelper(own, ctx.helpers) as unknown as Record<string, unknown>
  addQueryApi(handle, own, ctx.helpers, ctx.readFile)
  handle.begin = () => Promise.reject(new errors.FST_PG_POOL_NESTED_TRANSACTION())
  addSavepoint(handle, own, ctx, nextName)
  return handle as unknown as LeaseDb
}

function addSavepoint(
  db: Record<string, unknown>,
  sourceFor: () => QuerySource,
  ctx: QueryApiContext,
  nextName: () => string,
): void {
  db.savepoint = async (name: unknown, fn?: unknown) => {
    const callback = (fn ?? name) as (sql: LeaseDb) => unknown
    const { lease, setup, block } = sourceFor()
    // A handle of its own: while the callback runs, a statement on the handle savepoint() was
    // called on (request.db beside it) would run inside the savepoint and be rolled back with it.
    return lease.savepoint(block, async (token, settled) => {
      const id = blockHandle({ lease, setup, block: token }, ctx, nextName)
      const point = id(nextName())
      // Its own steps: the lease tells a ROLLBACK TO of its from a ROLLBACK that ends the block.
      const step = (query: unknown) => {
        ;(query as TrackedQuery).savepointStep = true
        return query as Promise<unknown>
      }
      await step(id`savepoint ${point}`)
      // Its work undone, or (the ROLLBACK TO refused: a COPY of its left open, a savepoint of its
      // left running) still in the transaction, which then must not commit.
      const undo = async (error: unknown): Promise<never> => {
        try {
          await step(id`rollback to savepoint ${point}`)
        } catch (stuck) {
          lease.savepointNotUndone(stuck)
          throw stuck
        }
        throw error
      }
      let result: unknown
      try {
        result = await settle(callback(id))
      } catch (error) {
        // Its callback has settled: a late statement on its handle would run after the ROLLBACK TO.
        settled()
        return undo(error)
      }
      settled()
      try {
        await step(id`release savepoint ${point}`)
        return result
      } catch (error) {
        return undo(error)
      }
    })
  }
}

export interface QueryApiContext {
  readonly helpers: postgres.Sql<{}>
  readonly readFile: (path: string) => Promise<string>
}

/**
 * request.db, the onLease hook's db, and the handles of app.db.lease(): every query on one lease.
 * `block`: the handle of a block app.db.begin() opened on a lease of its own.
 */
export function createLeaseDb(
  lease: Lease,
  ctx: QueryApiContext,
  setup = false,
  block?: object,
  leaseFor?: () => Lease,
): LeaseDb {
  let source: QuerySource = { lease, setup, block }
  // `leaseFor`: the lease may change between queries (a request's replica reads after its write).
  const sourceFor =
    leaseFor === undefined
      ? () => source
      : () => {
          const current = leaseFor()
          if (current !== source.lease) source = { lease: current, setup, block }
          return source
        }
  const db = templateOrHelper(sourceFor, ctx.helpers) as unknown as Record<string, unknown>
  addQueryApi(db, sourceFor, ctx.helpers, ctx.readFile)
  let savepoints = 0
  const nextName = () => `fpp_sp_${++savepoints}`
  db.begin = (options: unknown, fn?: unknown) => {
    const callback = (fn ?? options) as (sql: LeaseDb) => unknown
    let begin: string
    try {
      begin = beginText(fn === undefined ? undefined : options, 'begin(options, fn)')
    } catch (error) {
      return Promise.reject(error)
    }
    // On the lease the handle was made for, whichever serves its single statements now.
    return lease.transaction(
      begin,
      (token) => settle(callback(blockHandle({ lease, setup, block: token }, ctx, nextName))),
      setup,
    )
  }
  addSavepoint(db, sourceFor, ctx, nextName)
  return db as unknown as LeaseDb
}

const transactionKeys = ['isolation', 'readOnly', 'deferrable']
const isolationLevels = ['read committed', 'repeatable read', 'serializable']

/**
 * A transaction's BEGIN from options as given at run time (JavaScript callers, config read from
 * files): every key and value checked, refused by name (`at(key)`) with FST_PG_POOL_INVALID_OPTION.
 * A misspelled key or a bad value must not turn into a plain read-committed, read-write block.
 */
export function checkedBeginStatement(options: unknown, at: (key?: string) => string): string {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidOption(at(), 'expected an object { isolation, readOnly, deferrable }')
  }
  for (const key of Object.keys(options)) {
    if (!transactionKeys.includes(key)) throw unknownKey(at(key), key, transactionKeys)
  }
  const { isolation, readOnly, deferrable } = options as TransactionOptions
  // In any case, as the BEGIN it becomes (what ran before the options were checked).
  if (
    isolation !== undefined &&
    (typeof isolation !== 'string' || !isolationLevels.includes(isolation.toLowerCase()))
  ) {
    throw invalidOption(at('isolation'), `expected one of ${isolationLevels.join(', ')}`)
  }
  for (const [name, value] of [
    ['readOnly', readOnly],
    ['deferrable', deferrable],
  ] as const) {
    if (value !== undefined && typeof value !== 'boolean') throw invalidOption(at(name), 'expected a boolean')
  }
  return beginStatement(options as TransactionOptions)
}

/** A transaction's BEGIN from typed options. */
export function beginStatement(options: true | TransactionOptions): string {
  if (options === true) return 'BEGIN'
  let text = 'BEGIN'
  if (options.isolation) text += ` ISOLATION LEVEL ${options.isolation.toUpperCase()}`
  if (options.readOnly !== undefined) text += options.readOnly ? ' READ ONLY' : ' READ WRITE'
  if (options.deferrable !== undefined) text += options.deferrable ? ' DEFERRABLE' : ' NOT DEFERRABLE'
  return text
}

/** app.db: each call leases its own connection and returns it when done; `listen` on the instance's listener. */
export function createPoolDb(
  ctx: QueryApiContext,
  newLease: (oneShot: boolean) => Lease,
  listen: PoolDb['listen'] = () => Promise.reject(new Error('listen() is not available on this handle')),
): PoolDb {
  const oneShot = (): QuerySource => ({ lease: newLease(true), setup: false, block: undefined })
  const db = templateOrHelper(oneShot, ctx.helpers) as unknown as Record<string, unknown>
  addQueryApi(db, oneShot, ctx.helpers, ctx.readFile)
  const transaction = async (begin: string, fn: unknown) => {
    const lease = newLease(false)
    try {
      return await lease.transaction(begin, (token) => {
        const tx = createLeaseDb(lease, ctx, false, token) as unknown as Record<string, unknown>
        tx.begin = () => Promise.reject(new errors.FST_PG_POOL_NESTED_TRANSACTION())
        return settle((fn as (sql: LeaseDb) => unknown)(tx as unknown as LeaseDb))
      })
    } finally {
      await lease.finish('commit')
    }
  }
  const refusedOr = (begin: () => string, fn: unknown): Promise<unknown> => {
    let text: string
    try {
      text = begin()
    } catch (error) {
      return Promise.reject(error)
    }
    return transaction(text, fn)
  }
  db.begin = (options: unknown, fn?: unknown) =>
    fn === undefined ? transaction('BEGIN', options) : refusedOr(() => beginText(options, 'begin(options, fn)'), fn)
  db.transaction = (fn: unknown, options: unknown = {}) =>
    refusedOr(
      () => checkedBeginStatement(options, (key) => `transaction(fn, options${key === undefined ? '' : `.${key}`})`),
      fn,
    )
  db.lease = async (...args: unknown[]): Promise<LeasedDb> => {
    // pg's `connect(onConnect)`: the callback would never be called, and the lease never released.
    if (args.length > 0) throw invalidOption('lease()', 'takes no arguments: it resolves with the lease (await it)')
    const lease = newLease(false)
    const leased = createLeaseDb(lease, ctx) as unknown as Record<string, unknown>
    try {
      await lease.hold()
    } catch (error) {
      // The caller gets no handle to release: the lease is ended here (its connection, lost or
      // not, goes back to the pool, which closes a lost one).
      await lease.finish('rollback').catch(() => {})
      throw error
    }
    leased.release = () => lease.finish('commit')
    return leased as unknown as LeasedDb
  }
  db.listen = listen
  return db as unknown as PoolDb
}

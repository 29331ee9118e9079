import type postgres from 'postgres'
import { errors } from './errors.js'
import type { HandleContext, LeaseHandle, QuerySource } from './lease-handle.js'
import type { LeaseDb, LeasedDb, PoolDb, TransactionOptions } from './types.js'

type AnyFn = (...args: never[]) => unknown

const notifyTemplate = ((strings: TemplateStringsArray, ..._: unknown[]) => strings)`select pg_notify(${0}, ${0})`

/** postgres.js's `(query, args?, options?)` where `(query, options)` is allowed too. */
function splitArgs(rest: [unknown?, object?]): [unknown[], object] {
  const [first, second] = rest
  if (rest.length === 1 && first !== undefined && !Array.isArray(first)) return [[], first as object]
  return [(first as unknown[] | undefined) ?? [], second ?? {}]
}

/** Adds the non-template query API (unsafe, file, notify, value helpers) to `target`. */
function addQueryApi(target: Record<string, unknown>, handleFor: () => QuerySource, helpers: postgres.Sql<{}>): void {
  target.unsafe = (text: string, ...rest: [unknown?, Record<string, unknown>?]) => {
    const [list, options] = splitArgs(rest) as [unknown[], Record<string, unknown>]
    return handleFor().query([text], list, {
      prepare: false,
      ...options,
      simple: 'simple' in options ? options.simple : list.length === 0,
    })
  }
  target.file = (path: string, ...rest: [unknown?, object?]) => {
    const [list, options] = splitArgs(rest)
    return handleFor().file(path, list, options)
  }
  target.notify = (channel: string, payload: string) => handleFor().query(notifyTemplate, [channel, `${payload}`])
  target.json = helpers.json
  target.array = helpers.array
  target.typed = helpers.typed
  target.types = helpers.types
}

function templateOrHelper(handleFor: () => QuerySource, helpers: postgres.Sql<{}>) {
  return function db(first: unknown, ...rest: unknown[]) {
    if (first !== null && typeof first === 'object' && Array.isArray((first as TemplateStringsArray).raw)) {
      return handleFor().query(first as TemplateStringsArray, rest)
    }
    return (helpers as unknown as AnyFn)(...([first, ...rest] as never[]))
  }
}

/** request.db, and the handles of app.db.lease(): every query on one lease. */
export function createLeaseDb(handle: QuerySource, helpers: postgres.Sql<{}>): LeaseDb {
  const handleFor = () => handle
  const db = templateOrHelper(handleFor, helpers) as unknown as Record<string, unknown>
  addQueryApi(db, handleFor, helpers)
  db.begin = (options: unknown, fn?: unknown) => {
    if (handle.inTransaction) return Promise.reject(new errors.FST_PG_POOL_NESTED_TRANSACTION())
    return handle.block((sql) =>
      fn === undefined
        ? sql.begin(options as (tx: postgres.TransactionSql<{}>) => unknown)
        : sql.begin(options as string, fn as (tx: postgres.TransactionSql<{}>) => unknown),
    )
  }
  db.savepoint = async (name: unknown, fn?: unknown) => {
    const callback = (fn ?? name) as (sql: LeaseDb) => unknown
    const id = db as unknown as LeaseDb
    const point = id(handle.nextSavepoint())
    await id`savepoint ${point}`
    try {
      const result = await callback(id)
      await id`release savepoint ${point}`
      return result
    } catch (error) {
      await id`rollback to savepoint ${point}`
      throw error
    }
  }
  return db as unknown as LeaseDb
}

export function beginStatement(options: true | TransactionOptions): string {
  if (options === true) return 'BEGIN'
  let text = 'BEGIN'
  if (options.isolation) text += ` ISOLATION LEVEL ${options.isolation.toUpperCase()}`
  if (options.readOnly !== undefined) text += options.readOnly ? ' READ ONLY' : ' READ WRITE'
  if (options.deferrable !== undefined) text += options.deferrable ? ' DEFERRABLE' : ' NOT DEFERRABLE'
  return text
}

/** app.db: each call leases its own connection and returns it when done. */
export function createPoolDb(ctx: HandleContext, newHandle: (oneShot: boolean) => LeaseHandle): PoolDb {
  const oneShot = () => newHandle(true)
  const db = templateOrHelper(oneShot, ctx.helpers) as unknown as Record<string, unknown>
  addQueryApi(db, oneShot, ctx.helpers)
  const begin = (options: unknown, fn?: unknown) => {
    const handle = newHandle(false)
    return handle
      .block((sql) =>
        fn === undefined
          ? sql.begin(options as (tx: postgres.TransactionSql<{}>) => unknown)
          : sql.begin(options as string, fn as (tx: postgres.TransactionSql<{}>) => unknown),
      )
      .finally(() => handle.finish('commit'))
  }
  db.begin = begin
  db.transaction = (fn: unknown, options: TransactionOptions = {}) =>
    begin(beginStatement(options).slice('BEGIN'.length).toLowerCase().trim(), fn)
  db.lease = async (): Promise<LeasedDb> => {
    const handle = newHandle(false)
    const leased = createLeaseDb(handle, ctx.helpers) as unknown as Record<string, unknown>
    await handle.block(async () => {})
    leased.release = () => handle.finish('commit')
    return leased as unknown as LeasedDb
  }
  return db as unknown as PoolDb
}

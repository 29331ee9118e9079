import type { PgPoolView } from '@fastify-pg-pool/core'
import type { Attributes } from '@opentelemetry/api'
import { ATTR, DB_SYSTEM_POSTGRESQL } from './attributes.js'

/** Names a pool for `db.client.connection.pool.name`. */
export type PoolNamer = (view: PgPoolView) => string

/**
 * The conventions' default, `server.address:server.port/db.namespace` (the view's `target`,
 * never with credentials), for the default instance's primary; every other pool (a named
 * instance, a read replica) by its own name (`reporting`, `replica-0`), which two pools on one
 * server need to be told apart.
 */
export const defaultPoolName: PoolNamer = (view) =>
  view.instance === undefined && view.role === 'primary' ? view.target : view.name

/** One instrumented pool and the attributes every span and metric of it carries, built once. */
export interface PoolIdentity {
  readonly view: PgPoolView
  readonly name: string
  /** db.system.name, db.namespace, server.address, server.port: every statement's. */
  readonly server: Attributes
  /** db.client.connection.pool.name: every pool metric's. */
  readonly pool: Attributes
  /** `server` and `pool` together: acquire and transaction spans. */
  readonly both: Attributes
  readonly idle: Attributes
  readonly used: Attributes
}

export function poolIdentity(view: PgPoolView, namer: PoolNamer): PoolIdentity {
  const name = namer(view)
  const { host, port, database } = view.endpoint
  const server: Attributes = Object.freeze({
    [ATTR.dbSystemName]: DB_SYSTEM_POSTGRESQL,
    // The database the pool connects to: the schema would cost a query per statement to know
    // (search_path can change), which the conventions let an instrumentation leave out.
    [ATTR.dbNamespace]: database,
    [ATTR.serverAddress]: host,
    [ATTR.serverPort]: port,
  })
  const pool: Attributes = Object.freeze({ [ATTR.poolName]: name })
  return {
    view,
    name,
    server,
    pool,
    both: Object.freeze({ ...server, ...pool }),
    idle: Object.freeze({ ...pool, [ATTR.connectionState]: 'idle' }),
    used: Object.freeze({ ...pool, [ATTR.connectionState]: 'used' }),
  }
}

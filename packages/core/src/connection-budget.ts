import type * as postgres from 'postgres'

/** How the app's demand on one server compares with what the server allows, read at startup. */
export interface ConnectionBudget {
  /** The server's `max_connections`. */
  readonly maxConnections: number
  /** Slots only superusers or privileged roles may use (`superuser_reserved_connections` + `reserved_connections`). */
  readonly reserved: number
  /** `maxConnections - reserved`: what ordinary clients share. */
  readonly available: number
  /** Client backends connected when the budget was read (this pool's first connection included). */
  readonly inUse: number
  /** This pool's `pool.max`: connections one instance may open. */
  readonly max: number
  /** Expected instances of this app (`pool.instances`). */
  readonly instances: number
  /** `max × instances`: connections this pool may open at full load. */
  readonly demand: number
  /**
   * `demand` plus that of the app's other pools on the same server (named instances on another
   * database of it), which share its `max_connections`.
   */
  readonly serverDemand: number
  /** The app's pools counted in `serverDemand`, this one first (their labels: 'primary', a name). */
  readonly pools: readonly string[]
  /** True when `serverDemand > available`. */
  readonly exceeded: boolean
}

/** The server's figures, and which server it is (never published: it holds its address). */
export interface ServerSlots {
  readonly maxConnections: number
  readonly reserved: number
  readonly available: number
  readonly inUse: number
  /**
   * Tells servers apart: pools of one app on the same server share its slots. The cluster's
   * system identifier and port setting (the same over TCP and its Unix socket; a standby shares
   * its primary's identifier: its address too).
   */
  readonly server: string
}

export async function readServerSlots(sql: postgres.ISql<{}>, fallbackServer: string): Promise<ServerSlots> {
  // By position (values()): an app's column transform (postgres.camel) would rename the columns.
  // pg_control_system() is executable by every role by default; where a platform revoked it, the
  // server is told apart by the address the pool was given.
  const [row] = await sql`
    select pg_catalog.current_setting('max_connections')::pg_catalog.int4 as max_connections,
      pg_catalog.current_setting('superuser_reserved_connections')::pg_catalog.int4 as superuser,
      coalesce(pg_catalog.current_setting('reserved_connections', true), '0')::pg_catalog.int4 as reserved,
      (select pg_catalog.count(*) from pg_catalog.pg_stat_activity
        where backend_type OPERATOR(pg_catalog.=) 'client backend')::pg_catalog.int4 as in_use,
      case when pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'execute')
        then (select system_identifier::pg_catalog.text from pg_catalog.pg_control_system()) end as system,
      pg_catalog.pg_is_in_recovery() as recovery,
      coalesce(pg_catalog.host(pg_catalog.inet_server_addr()), 'socket') OPERATOR(pg_catalog.||) ':'
        OPERATOR(pg_catalog.||) pg_catalog.current_setting('port') as address`.values()
  const [
    maxConnections = 0,
    superuser = 0,
    reservedSlots = 0,
    inUse = 0,
    system = null,
    recovery = false,
    address = '',
  ] = (row ?? []) as [number, number, number, number, string | null, boolean, string]
  const reserved = superuser + reservedSlots
  const port = String(address).slice(String(address).lastIndexOf(':') + 1)
  const server =
    system === null
      ? `address ${fallbackServer}`
      : recovery
        ? `standby ${system} ${address} ${fallbackServer}`
        : `primary ${system}:${port}`
  return Object.freeze({ maxConnections, reserved, available: maxConnections - reserved, inUse, server })
}
